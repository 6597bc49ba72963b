"""WILSON steps of real training on a tiny synthetic set whose new images have no masks, chained as an incremental
task's steps are, and the error a step gives without its old segmenter."""
from __future__ import annotations

import json

import pytest
import torch

from tests.incremental.test_segmenter_wilson import CLASSES, OLD_CLASSES, SIDE
from wsseg.config import default_config
from wsseg.data import load_samples, make_synthetic_voc, read_image
from wsseg.errors import ConfigError
from wsseg.store import open_store

# Several threads spin against the other processes of a 2-core machine and slow each step several times.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture
def incremental_voc(tmp_path):
    """A 2-1 task's data: the first step's images (classes a, b) and, apart, the images of all four classes the
    later steps pick from, their train masks deleted."""
    old_data = make_synthetic_voc(tmp_path / "old", train=4, val=1, seed=0, size=SIDE, classes=OLD_CLASSES)
    new_data = make_synthetic_voc(tmp_path / "new", train=16, val=1, seed=0, size=SIDE, classes=CLASSES)
    for sample in load_samples(new_data, "train", CLASSES):
        sample.mask_path.unlink()
    return old_data, new_data


def test_wilson_steps_train_on_image_labels_alone_and_chain(incremental_voc, tmp_path):
    from wsseg.segmenter.inference import load_segmenter, predict
    from wsseg.steps.train_segmenter import train_segmenter

    old_data, new_data = incremental_voc
    first = open_store(tmp_path / "step0")
    config = default_config("cpu-tiny")
    config["segmenter"].update(iterations=2, validate=False)
    train_segmenter(old_data, None, first, config, OLD_CLASSES)

    stores = [first]
    for step, iterations in ((1, 3), (2, 2)):
        config = default_config("cpu-tiny")
        config["segmenter"].update(mode="wilson", iterations=iterations)
        config["segmenter"]["wilson"].update(old_checkpoint=stores[-1].uri, old_classes=1 + step, new_classes=1)
        stores.append(open_store(tmp_path / f"step{step}"))
        summary = train_segmenter(new_data, None, stores[-1], config, CLASSES)

        metrics = json.loads(stores[-1].get_bytes("metrics.json"))
        assert metrics["iterations"] == summary["iterations"] == iterations
        assert not metrics["supervised"] and "val_miou" not in metrics
        assert "WILSONSegmentor" in stores[-1].get_bytes("mmseg_config.py").decode()
        model = load_segmenter(stores[-1], device="cpu")
        assert model.decode_head.conv_seg.out_channels == 3 + step
        assert model.old_model.decode_head.conv_seg.out_channels == 2 + step
        labels = predict(model, read_image(load_samples(new_data, "val", CLASSES)[0].image_path))
        assert labels.shape == (SIDE, SIDE) and int(labels.max()) < 3 + step

    # Each step starts from its old model: a few AdamW steps of lr 0.008 move no weight by more than 0.03, where a
    # fresh initialisation would differ by about the weights' own size.
    models = [load_segmenter(store, device="cpu") for store in stores]
    for earlier, later in zip(models, models[1:], strict=False):
        stem = [model.backbone.stem[0].weight for model in (earlier, later)]
        assert float((stem[1] - stem[0]).abs().max()) < 0.03 < float(stem[0].abs().max())
    # The old model of the second new step is the first new step's segmentor, not that step's own old model.
    torch.testing.assert_close(models[2].old_model.decode_head.conv_seg.weight, models[1].decode_head.conv_seg.weight)


def test_wilson_step_names_the_setting_of_a_missing_old_segmenter(incremental_voc, tmp_path):
    from wsseg.steps.train_segmenter import train_segmenter

    _, new_data = incremental_voc
    config = default_config("cpu-tiny")
    config["segmenter"].update(mode="wilson", iterations=1)
    config["segmenter"]["wilson"].update(old_classes=2, new_classes=1)
    with pytest.raises(ConfigError, match="segmenter.wilson.old_checkpoint"):
        train_segmenter(new_data, None, open_store(tmp_path / "out"), config, CLASSES)
    empty = tmp_path / "empty"
    empty.mkdir()
    config["segmenter"]["wilson"]["old_checkpoint"] = str(empty)
    with pytest.raises(ConfigError, match="segmenter.wilson.old_checkpoint: .* holds no checkpoint.pth"):
        train_segmenter(new_data, None, open_store(tmp_path / "out"), config, CLASSES)
