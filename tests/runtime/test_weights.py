"""Starting weights from where a cluster keeps them: a local file, the run's bucket (a moto S3 server), a URL that
answers (a loopback HTTP server) or one that does not; and a whole segmenter to start training from."""
from __future__ import annotations

import functools
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from tests.fixtures_s3 import free_port
from wsseg.classes import ClassList
from wsseg.config import default_config
from wsseg.errors import ConfigError
from wsseg.runtime.weights import load_fitting_weights, local_weights
from wsseg.store import open_store

# Several threads spin against the other processes of a 2-core machine and slow each step several times.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ClassList()
# ResNetV1c-50's first stem convolution: 3 -> 32 channels, 3x3.
STEM_WEIGHT = "stem.0.weight"
STEM_SHAPE = (32, 3, 3, 3)


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server over `tmp_path/served`: (base URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def write_backbone_checkpoint(path) -> torch.Tensor:
    """A small backbone checkpoint, as mmseg's ImageNet files hold it: one stem convolution of known values."""
    weight = torch.full(STEM_SHAPE, 0.125)
    torch.save({"state_dict": {STEM_WEIGHT: weight}}, path)
    return weight


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_gpu_preset_loads_pretrained_backbone_weights_from_a_file_or_the_bucket(where, tmp_path, request):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from wsseg.segmenter.configs import build_mmseg_config
    from wsseg.steps.train_segmenter import staged_settings

    register_all_modules()
    weight = write_backbone_checkpoint(tmp_path / "resnet50_v1c.pth")
    source = str(tmp_path / "resnet50_v1c.pth")
    if where == "s3":
        bucket = request.getfixturevalue("s3_env")
        open_store(bucket).put_file("weights/resnet50_v1c.pth", tmp_path / "resnet50_v1c.pth")
        source = f"{bucket}/weights/resnet50_v1c.pth"
    settings = dict(default_config("gpu")["segmenter"], pretrained=source)

    staged = staged_settings(settings, tmp_path / "work")
    config = build_mmseg_config(staged, CLASSES, dict(train={}), str(tmp_path), "out", distributed=False,
                                cuda=False, seed=0)
    model = MODELS.build(config.model)
    model.init_weights()

    torch.testing.assert_close(model.backbone.state_dict()[STEM_WEIGHT], weight)
    assert config.model.backbone.depth == 50 and config.model.backbone.base_channels == 64


def test_an_unreachable_url_fails_at_the_start_of_the_step_in_seconds_naming_the_setting(tiny_voc, tmp_path):
    from wsseg.steps.train_segmenter import train_segmenter

    config = default_config("cpu-tiny")
    config["segmenter"]["pretrained"] = f"http://127.0.0.1:{free_port()}/resnet50_v1c.pth"
    out = open_store(tmp_path / "out")
    started = time.perf_counter()
    with pytest.raises(ConfigError) as raised:
        train_segmenter(tiny_voc, None, out, config, CLASSES)
    assert time.perf_counter() - started < 10
    message = str(raised.value)
    assert message.startswith("segmenter.pretrained: cannot download http://127.0.0.1")
    assert "s3://" in message and "local path" in message
    assert out.list() == []


def test_a_url_that_answers_is_left_for_mmengine_to_download(http_server):
    url, folder = http_server
    write_backbone_checkpoint(folder / "backbone-0123abcd.pth")
    assert local_weights(f"{url}/backbone-0123abcd.pth", "segmenter.pretrained") == f"{url}/backbone-0123abcd.pth"
    with pytest.raises(ConfigError, match=r"segmenter.pretrained: cannot download .*missing.pth \(HTTP 404\)"):
        local_weights(f"{url}/missing.pth", "segmenter.pretrained")


def test_a_missing_file_or_store_key_names_the_setting_and_the_alternatives(s3_env, tmp_path):
    with pytest.raises(ConfigError, match=r"classifier.model.pretrained: no file at .*nothing.pth; .*s3://"):
        local_weights(str(tmp_path / "nothing.pth"), "classifier.model.pretrained")
    with pytest.raises(ConfigError, match=r"segmenter.init_checkpoint: cannot fetch s3://.*/nothing.pth"):
        local_weights(f"{s3_env}/nothing.pth", "segmenter.init_checkpoint", tmp_path)
    with pytest.raises(ConfigError, match=r"segmenter.pretrained: 'ftp://host/x.pth' has a scheme"):
        local_weights("ftp://host/x.pth", "segmenter.pretrained")
    assert local_weights(None, "segmenter.pretrained") is None


def test_imagenet_weights_exist_only_at_the_widths_mmseg_trained(tmp_path):
    from wsseg.steps.train_segmenter import staged_settings

    settings = dict(default_config("cpu-tiny")["segmenter"], model="segformer", pretrained="imagenet")
    with pytest.raises(ConfigError, match="no ImageNet weights for a MiT-B0 of width 16"):
        staged_settings(settings, tmp_path)


def test_training_starts_from_an_init_checkpoint_in_the_bucket(s3_env, tiny_voc, tmp_path):
    from wsseg.steps.train_segmenter import train_segmenter

    config = default_config("cpu-tiny")
    config["segmenter"].update(iterations=2, validate=False)
    first = open_store(tmp_path / "first")
    train_segmenter(tiny_voc, None, first, config, CLASSES)
    bucket = open_store(s3_env)
    bucket.put_bytes("models/start.pth", first.get_bytes("checkpoint.pth"))

    # At learning rate 0 training leaves the weights where they started.
    config["segmenter"].update(init_checkpoint=f"{s3_env}/models/start.pth", optimizer=dict(type="AdamW", lr=0.0))
    second = open_store(tmp_path / "second")
    train_segmenter(tiny_voc, None, second, config, CLASSES)

    start, trained = (torch.load(store.open_read("checkpoint.pth"), map_location="cpu", weights_only=False)
                      for store in (first, second))
    for name in ("decode_head.conv_seg.weight", "backbone.stem.0.weight"):
        torch.testing.assert_close(trained["state_dict"][name], start["state_dict"][name])


def test_the_classifier_takes_its_pretrained_weights_the_same_ways(tiny_voc, tmp_path):
    from wsseg.steps.train_classifier import train_classifier

    config = default_config("cpu-tiny")
    config["classifier"]["model"]["pretrained"] = f"http://127.0.0.1:{free_port()}/resnet18.pth"
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"^classifier.model.pretrained: cannot download .*s3://"):
        train_classifier(tiny_voc, open_store(tmp_path / "out"), config, CLASSES)
    assert time.perf_counter() - started < 10


def test_weights_that_leave_a_tensor_out_or_bring_another_are_named_not_loaded_loosely():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    weights = model.state_dict()
    assert load_fitting_weights(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1)), weights,
                                "there", "fix it") == len(weights)
    short = {key: value for key, value in weights.items() if key != "1.bias"}
    with pytest.raises(ConfigError, match=r"^there does not fit the model \(3 tensors; 1 missing \(such as 1.bias\)"
                                          r"\); fix it$"):
        load_fitting_weights(model, short, "there", "fix it")
    with pytest.raises(ConfigError, match=r"1 unexpected \(such as 2.weight\)"):
        load_fitting_weights(model, {**weights, "2.weight": torch.zeros(1)}, "there", "fix it")
    wider = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 1)).state_dict()
    with pytest.raises(ConfigError, match=r"^there does not fit the model \(4 tensors; .*size mismatch"):
        load_fitting_weights(model, wider, "there", "fix it")
