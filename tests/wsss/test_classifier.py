"""The CAM classifier (mmseg-registered) and the train-classifier step on a small synthetic VOC set."""
import json
import os
import shutil
import subprocess
import sys
import time
from xml.etree import ElementTree

import pytest
import torch
import torch.nn.functional as F
import yaml

from tests.fixtures_segmenter import Killed
from wsseg.classes import ClassList
from wsseg.config import default_config
from wsseg.data import load_samples
from wsseg.errors import ConfigError, DataError
from wsseg.steps.train_classifier import train_classifier
from wsseg.store import open_store
from wsseg.wsss.classifier import build_classifier, load_classifier
from wsseg.wsss.training import ClassifierImages, load_from_store, train_epoch

CLASSES = ClassList()


def tiny_classifier(**model_overrides) -> torch.nn.Module:
    """The cpu-tiny model, built from its config dict through mmseg's registry."""
    return build_classifier({**default_config("cpu-tiny")["classifier"]["model"], **model_overrides}, CLASSES)


def tiny_config(**classifier_overrides) -> dict:
    config = default_config("cpu-tiny")
    config["classifier"].update(classifier_overrides)
    return config


def copy_dataset(root, tmp_path):
    return shutil.copytree(root, tmp_path / "voc")


def corrupt_jpeg(path):
    path.write_bytes(path.read_bytes()[:200])


def test_cam_classifier_is_registered_in_mmseg_and_built_from_a_dict():
    from mmseg.registry import MODELS

    import wsseg.wsss.classifiers  # noqa: F401

    backbone = {"type": "ResNetV1c", "depth": 18, "stem_channels": 16, "base_channels": 16,
                "strides": [1, 2, 2, 1], "dilations": [1, 1, 1, 1], "out_indices": [3]}
    model = MODELS.build({"type": "CAMClassifier", "num_classes": 20, "backbone": backbone})
    assert type(model).__name__ == "CAMClassifier"
    images = torch.rand(2, 3, 64, 96) * 255
    assert model(images).shape == (2, 20)
    assert model.features(images).shape == (2, 128, 4, 6), "last stage at output stride 16"
    assert model.classifier.bias is None


def test_pretrained_backbone_checkpoint_is_loaded_by_init_weights(tmp_path):
    source = tiny_classifier()
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in source.backbone.state_dict().items()}}, path)
    model = tiny_classifier(pretrained=str(path))
    model.init_weights()
    for name, value in source.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[name], value)
    with pytest.raises(ConfigError, match="no checkpoint"):
        tiny_classifier(pretrained=str(tmp_path / "missing.pth")).init_weights()


def test_training_lowers_the_loss_and_writes_checkpoint_last_metrics_and_config(tiny_voc, tmp_path):
    out = open_store(tmp_path / "classifier")
    config = tiny_config(epochs=4)
    summary = train_classifier(tiny_voc, out, config, CLASSES)

    assert summary["train_images"] == 12 and summary["resumed_from_epoch"] == 0
    assert {"checkpoint.pth", "last.pth", "metrics.json", "config.yaml"} <= set(out.list())
    assert load_from_store(out, "last.pth")["epoch"] == 4
    assert yaml.safe_load(out.get_bytes("config.yaml")) == config
    metrics = yaml.safe_load(out.get_bytes("metrics.json"))
    assert 0 <= metrics["map"] <= 1 and 0 <= metrics["f1"] <= 1 and metrics["images"] == 6

    torch.manual_seed(config["seed"])
    untrained = tiny_classifier().eval()
    trained = load_classifier(out, CLASSES, torch.device("cpu"))
    assert _training_set_loss(trained, tiny_voc, config) < 0.8 * _training_set_loss(untrained, tiny_voc, config)


def _training_set_loss(model, root, config) -> float:
    dataset = ClassifierImages(load_samples(root, "train", CLASSES), len(CLASSES) - 1, config["classifier"],
                               augment=False)
    images, targets = (torch.stack(column) for column in zip(*dataset, strict=True))
    with torch.no_grad():
        return F.multilabel_soft_margin_loss(model.eval()(images), targets).item()


def test_a_killed_run_resumes_from_its_last_finished_epoch(tiny_voc, tmp_path):
    out_dir = tmp_path / "classifier"
    script = ("import sys; from wsseg.classes import ClassList; from wsseg.store import open_store; "
              "from wsseg.config import default_config; from wsseg.steps.train_classifier import train_classifier; "
              "c = default_config('cpu-tiny'); c['classifier']['epochs'] = 1000; "
              "train_classifier(sys.argv[1], open_store(sys.argv[2]), c, ClassList())")
    process = subprocess.Popen([sys.executable, "-c", script, str(tiny_voc), str(out_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out_dir / "last.pth").exists():
            assert process.poll() is None and time.monotonic() < deadline, "training never saved an epoch"
            time.sleep(0.1)
    finally:
        process.kill()
        process.wait()
    out = open_store(out_dir)
    stopped_after = load_from_store(out, "last.pth")["epoch"]
    assert 0 < stopped_after < 1000 and not out.exists("checkpoint.pth")

    summary = train_classifier(tiny_voc, out, tiny_config(epochs=stopped_after + 1), CLASSES)
    assert summary["resumed_from_epoch"] == stopped_after
    assert load_from_store(out, "last.pth")["epoch"] == stopped_after + 1
    assert out.exists("checkpoint.pth")


def test_a_killed_and_rerun_training_ends_at_the_weights_of_an_uninterrupted_one(tiny_voc, tmp_path, monkeypatch):
    from wsseg.wsss import classifier as step

    config = tiny_config(epochs=3)
    uninterrupted, killed = open_store(tmp_path / "uninterrupted"), open_store(tmp_path / "killed")
    train_classifier(tiny_voc, uninterrupted, config, CLASSES)
    epochs_begun = []

    def dies_in_the_third_epoch(*args, **kwargs):
        epochs_begun.append(len(epochs_begun) + 1)
        if len(epochs_begun) == 3:
            raise Killed
        return train_epoch(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(step, "train_epoch", dies_in_the_third_epoch)
        with pytest.raises(Killed):
            train_classifier(tiny_voc, killed, config, CLASSES)
    assert train_classifier(tiny_voc, killed, config, CLASSES)["resumed_from_epoch"] == 2
    whole, resumed = (load_from_store(store, "checkpoint.pth")["state_dict"] for store in (uninterrupted, killed))
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)


def test_resuming_with_a_different_model_is_a_config_error(tiny_voc, tmp_path):
    out = open_store(tmp_path / "classifier")
    train_classifier(tiny_voc, out, tiny_config(epochs=1), CLASSES)
    wider = tiny_config(epochs=2)
    wider["classifier"]["model"]["backbone"]["base_channels"] = 8
    with pytest.raises(ConfigError, match="different classifier config"):
        train_classifier(tiny_voc, out, wider, CLASSES)


def test_corrupt_and_unlabelled_images_are_left_out_and_counted(tiny_voc, tmp_path):
    root = copy_dataset(tiny_voc, tmp_path)
    train_ids = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    corrupt_jpeg(root / "JPEGImages" / f"{train_ids[0]}.jpg")
    _remove_objects(root / "Annotations" / f"{train_ids[1]}.xml")

    summary = train_classifier(root, open_store(tmp_path / "classifier"), tiny_config(epochs=1), CLASSES)
    assert (summary["train_images"], summary["skipped_corrupt"], summary["skipped_unlabelled"]) == (10, 1, 1)

    with pytest.raises(DataError, match=train_ids[0]):
        train_classifier(root, open_store(tmp_path / "strict"), tiny_config(epochs=1), CLASSES, strict=True)


def _remove_objects(xml_path):
    tree = ElementTree.parse(xml_path)
    for element in tree.getroot().findall("object"):
        tree.getroot().remove(element)
    tree.write(xml_path)


@pytest.mark.slow
def test_two_ranks_each_train_on_half_the_images_and_only_rank_0_writes(tiny_voc, tmp_path):
    """Data-parallel classifier training under torchrun, two CPU processes (gloo) standing in for two GPUs, as the
    pods of a PyTorchJob run it (`wsseg.runtime.distributed`)."""
    out, logs = tmp_path / "out", tmp_path / "logs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "--log-dir", str(logs), "--redirects", "3", "-m", "wsseg.runtime.distributed",
               "train-classifier", "--data", str(tiny_voc), "--out", str(out), "--preset", "cpu-tiny"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-4000:] + "".join(path.read_text()[-2000:]
                                                                  for path in logs.rglob("stderr.log"))
    summaries = [json.loads(path.read_text().strip().splitlines()[-1]) for path in logs.rglob("stdout.log")]
    assert sorted(summary["rank"] for summary in summaries) == [0, 1]
    train_images = load_samples(tiny_voc, "train", ClassList())
    # A DistributedSampler hands each rank half of every epoch's images.
    assert all(summary["images_per_epoch"] == len(train_images) // 2 for summary in summaries)
    store = open_store(out)
    assert {"checkpoint.pth", "last.pth", "metrics.json", "config.yaml"} <= set(store.list())
    state = torch.load(store.open_read("checkpoint.pth"), map_location="cpu", weights_only=True)
    assert not any(key.startswith("module.") for key in state["state_dict"])
