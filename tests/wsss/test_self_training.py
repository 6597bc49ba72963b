"""Self-training over the uncertain band (`wsseg.wsss.self_training`, `segmenter.self_training`): the band's labels
come from a first segmenter and stay within the image's labels; the confident pixels keep theirs."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tests.segmenter.test_segmenter import tiny_config, write_pseudo_masks
from wsseg.classes import IGNORE_INDEX
from wsseg.data import load_samples, read_mask
from wsseg.steps.evaluate import evaluate
from wsseg.store import open_store
from wsseg.wsss.pseudo_masks import decode_mask_png
from wsseg.wsss.self_training import fill_band

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_band_pixels_take_the_most_probable_of_background_and_the_image_classes_and_the_rest_keep_theirs():
    mask = np.array([[3, IGNORE_INDEX, IGNORE_INDEX, 0]], np.uint8)
    probabilities = np.zeros((6, 1, 4), np.float32)
    probabilities[3, 0, 1] = 0.6     # the image's class wins the first band pixel
    probabilities[5, 0, 2] = 0.9     # an absent class is most probable in the second...
    probabilities[0, 0, 2] = 0.1     # ...where the background is the best allowed label
    probabilities[5, 0, [0, 3]] = 1  # confident pixels keep their labels whatever the segmenter says

    filled = fill_band(mask, probabilities, image_labels=(3,))

    assert filled.tolist() == [[3, 3, 0, 0]]


def test_self_training_trains_a_first_segmenter_and_the_step_model_on_its_completed_masks(tiny_voc, classes,
                                                                                         tmp_path):
    from wsseg.steps.train_segmenter import train_segmenter

    masks = open_store(tmp_path / "pseudo")
    given = write_pseudo_masks(masks, tiny_voc, classes, uncertain_rows=8)
    out = open_store(tmp_path / "segmenter")

    metrics = train_segmenter(tiny_voc, masks, out, tiny_config(self_training=True), classes)

    assert out.child("first-round").exists("checkpoint.pth") and out.exists("checkpoint.pth")
    assert metrics["self_training"]["relabel"]["relabelled"] == len(given)
    for sample in load_samples(tiny_voc, "train", classes):
        completed = decode_mask_png(out.child("relabelled").get_bytes(f"{sample.image_id}.png"))
        confident = given[sample.image_id] != IGNORE_INDEX
        assert not (completed == IGNORE_INDEX).any()
        np.testing.assert_array_equal(completed[confident], given[sample.image_id][confident])
        assert set(np.unique(completed[~confident])) <= {0, *sample.labels}
    trained_on = out.get_bytes("mmseg_config.py").decode()
    assert out.child("relabelled").uri in trained_on and masks.uri not in trained_on
    assert json.loads(out.get_bytes("metrics.json"))["self_training"]["first_round"] == out.child("first-round").uri
    evaluation = evaluate(tiny_voc, ground_truth_cams(tiny_voc, classes, open_store(tmp_path / "cams")), masks, out,
                          open_store(tmp_path / "evaluate"), tiny_config(self_training=True), classes)
    assert evaluation["relabelled_mask_miou"] is not None and evaluation["uncertain_fraction"] > 0


def ground_truth_cams(data_root, classes, store):
    """CAM files that fire exactly on each labelled class's ground-truth pixels."""
    for sample in load_samples(data_root, "train", classes):
        truth = read_mask(sample.mask_path)
        buffer = io.BytesIO()
        np.savez(buffer, cams=np.stack([truth == label for label in sample.labels]).astype(np.float16),
                 labels=np.array(sample.labels, np.int16))
        store.put_bytes(f"{sample.image_id}.npz", buffer.getvalue())
    return store


def test_self_training_leaves_the_ground_truth_upper_bound_a_single_training(tiny_voc, classes, tmp_path):
    from wsseg.steps.train_segmenter import train_segmenter

    out = open_store(tmp_path / "upper")

    metrics = train_segmenter(tiny_voc, None, out, tiny_config(self_training=True), classes)

    assert "self_training" not in metrics
    assert not out.list("first-round/") and out.exists("checkpoint.pth")
