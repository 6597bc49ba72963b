"""ClassMix training steps on the tiny synthetic VOC set (`test_segmenter_classmix` has its parts on tensors): its
settings' errors, a few iterations with the unlabelled images' masks deleted, training started from a trained
standard segmenter (the semi pipeline's warm start), its teacher included, and a killed training rerun."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.semi.test_segmenter_classmix import build_segmentor
from wsseg.config import default_config
from wsseg.data import load_samples
from wsseg.errors import ConfigError
from wsseg.semi.labelled import split_train
from wsseg.store import open_store

# Several threads spin against the other processes of a 2-core machine and slow each step several times.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_classmix_needs_a_labelled_subset_and_pairs_of_unlabelled_images(tiny_voc, classes, tmp_path):
    from wsseg.steps.train_segmenter import train_segmenter

    config = default_config("cpu-tiny")
    config["segmenter"]["mode"] = "classmix"
    with pytest.raises(ConfigError, match="semi.labelled"):
        train_segmenter(tiny_voc, None, open_store(tmp_path / "a"), config, classes)
    config["semi"]["labelled"] = 4
    config["segmenter"]["classmix"]["unlabelled_batch_size"] = 1
    with pytest.raises(ConfigError, match="unlabelled_batch_size"):
        train_segmenter(tiny_voc, None, open_store(tmp_path / "b"), config, classes)
    config["segmenter"]["classmix"].update(unlabelled_batch_size=2, confidence_weighting="per-class")
    with pytest.raises(ConfigError, match="confidence_weighting is 'per-class'; choose one of image, pixel"):
        train_segmenter(tiny_voc, None, open_store(tmp_path / "c"), config, classes)


def test_classmix_training_never_reads_the_unlabelled_masks_and_writes_a_model_with_its_teacher(
        tiny_voc, classes, tmp_path):
    from wsseg.segmenter.inference import load_segmenter, predict
    from wsseg.steps.train_segmenter import train_segmenter

    data = shutil.copytree(tiny_voc, tmp_path / "voc")
    config = default_config("cpu-tiny")
    config["segmenter"].update(mode="classmix", iterations=3)
    config["semi"]["labelled"] = "1/3"
    split = split_train(load_samples(data, "train", classes), config["semi"], config["seed"])
    for sample in split.unlabelled:  # these images are unlabelled: training must not need their masks
        (data / "SegmentationClass" / f"{sample.image_id}.png").unlink()
    out = open_store(tmp_path / "segmenter")
    summary = train_segmenter(data, None, out, config, classes)

    metrics = json.loads(out.get_bytes("metrics.json"))
    assert metrics["iterations"] == summary["iterations"] == 3 and 0 <= metrics["val_miou"] <= 100
    assert (metrics["labelled_images"], metrics["unlabelled_images"]) == (4, 8)
    stored_config = out.get_bytes("mmseg_config.py").decode()
    assert "ClassMixSegmentor" in stored_config and "wsseg.semi.classmix" in stored_config
    with out.open_read("checkpoint.pth") as file:
        state = torch.load(file, map_location="cpu", weights_only=False)["state_dict"]
    assert int(state["teacher.steps"]) == 3
    assert any(key.startswith("teacher.module.backbone.") for key in state)
    model = load_segmenter(out, device="cpu")
    labels = predict(model, torch.zeros(64, 64, 3, dtype=torch.uint8).numpy())
    assert type(model).__name__ == "ClassMixSegmentor" and labels.shape == (64, 64)


def stored_weights(store) -> dict:
    with store.open_read("checkpoint.pth") as file:
        return torch.load(file, map_location="cpu", weights_only=False)["state_dict"]


def test_a_segmenter_checkpoint_without_a_teacher_becomes_the_teacher_at_the_first_update(
        classes, tiny_segmenter, tmp_path):
    from mmengine.runner.checkpoint import load_checkpoint

    model = build_segmentor(classes)
    tiny_segmenter.get_file("checkpoint.pth", tmp_path / "checkpoint.pth")
    # As mmengine's load_from does: non-strict, so the teacher's keys are missing, not an error.
    loaded = load_checkpoint(model, str(tmp_path / "checkpoint.pth"), map_location="cpu", strict=False)["state_dict"]
    assert not any(key.startswith("teacher.") for key in loaded)
    assert int(model.teacher.steps) == 0
    model.update_teacher()
    teacher = model.teacher.module.state_dict()
    assert set(teacher) <= set(loaded)
    for name, value in teacher.items():
        torch.testing.assert_close(value, loaded[name], rtol=0, atol=0)


def warm_start_config(iterations: int, warm_start: bool = True) -> dict:
    config = default_config("cpu-tiny")
    config["segmenter"].update(mode="classmix", iterations=iterations, validate=False)
    config["semi"].update(labelled="1/3", warm_start=warm_start)
    return config


@pytest.fixture(scope="module")
def warm_started(tiny_voc, classes, tiny_segmenter, tmp_path_factory):
    """A classmix train-segmenter of one iteration given the tiny standard segmenter to start from."""
    from wsseg.steps.train_segmenter import train_segmenter

    out = open_store(tmp_path_factory.mktemp("warm_started"))
    train_segmenter(tiny_voc, None, out, warm_start_config(iterations=1), classes, init_segmenter=tiny_segmenter)
    return out


def test_classmix_given_a_segmenter_starts_from_its_weights(warm_started, tiny_segmenter):
    metrics = json.loads(warm_started.get_bytes("metrics.json"))
    assert metrics["initialised_from"] == tiny_segmenter.uri
    # The teacher copied the student before its first step: the student started as the given segmenter.
    state, initial = stored_weights(warm_started), stored_weights(tiny_segmenter)
    assert int(state["teacher.steps"]) == 1
    teacher = {key.removeprefix("teacher.module."): value for key, value in state.items()
               if key.startswith("teacher.module.")}
    assert teacher and set(teacher) <= set(initial)
    for name, value in teacher.items():
        torch.testing.assert_close(value, initial[name], rtol=0, atol=0)


def test_a_rerun_after_a_kill_resumes_its_own_training_not_the_given_segmenter(
        warm_started, tiny_voc, classes, tiny_segmenter, tmp_path):
    from wsseg.steps.train_segmenter import train_segmenter

    # Killed after its checkpoint reached the store as last.pth, before the model was published.
    killed = shutil.copytree(warm_started.root, tmp_path / "killed")
    (killed / "checkpoint.pth").unlink()
    (killed / "metrics.json").unlink()
    out = open_store(killed)
    summary = train_segmenter(tiny_voc, None, out, warm_start_config(iterations=2), classes,
                              init_segmenter=tiny_segmenter)
    assert summary["resumed_from_iteration"] == 1 and summary["iterations"] == 2
    assert int(stored_weights(out)["teacher.steps"]) == 2


def test_a_killed_and_rerun_classmix_training_ends_where_an_uninterrupted_one_does(
        tiny_voc, classes, tiny_segmenter, tmp_path, dies_in_iteration):
    from wsseg.steps.train_segmenter import train_segmenter

    config = warm_start_config(iterations=4)
    uninterrupted, killed = open_store(tmp_path / "uninterrupted"), open_store(tmp_path / "killed")
    train_segmenter(tiny_voc, None, uninterrupted, config, classes, init_segmenter=tiny_segmenter)
    # The mixing masks, the jitter and the blur of iteration 3 are drawn again after the kill.
    with dies_in_iteration(4):
        train_segmenter(tiny_voc, None, killed, config, classes, init_segmenter=tiny_segmenter)
    summary = train_segmenter(tiny_voc, None, killed, config, classes, init_segmenter=tiny_segmenter)
    assert summary["resumed_from_iteration"] == 2
    resumed, whole = stored_weights(killed), stored_weights(uninterrupted)
    assert resumed.keys() == whole.keys()
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)


def test_without_warm_start_the_given_segmenter_is_ignored(tiny_voc, classes, tmp_path):
    from wsseg.steps.train_segmenter import train_segmenter

    # Its store holds no checkpoint: starting from it would fail.
    unfinished = open_store(tmp_path / "unfinished")
    out = open_store(tmp_path / "cold")
    summary = train_segmenter(tiny_voc, None, out, warm_start_config(iterations=1, warm_start=False), classes,
                              init_segmenter=unfinished)
    assert "initialised_from" not in summary and summary["iterations"] == 1
    with pytest.raises(ConfigError, match=f"{unfinished.uri} holds no checkpoint.pth"):
        train_segmenter(tiny_voc, None, open_store(tmp_path / "warm"), warm_start_config(iterations=1), classes,
                        init_segmenter=unfinished)
