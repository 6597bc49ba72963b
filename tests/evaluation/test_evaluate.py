"""evaluate: mIoU of CAMs and pseudo masks on hand-made images whose answers are worked out in comments."""
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from wsseg.classes import ClassList
from wsseg.errors import ConfigError, DataError
from wsseg.steps.evaluate import default_config, evaluate
from wsseg.store import open_store
from wsseg.wsss.pseudo_masks import encode_mask_png

CLASSES = ClassList(("background", "cat", "dog"))
CONFIG = {"evaluate": default_config("cpu-tiny")}


def write_dataset(root, items):
    """A manifest dataset of PNG images and masks, plus the CAM and pseudo-mask stores.

    items: dicts with id, truth (H, W), labels (names), cams (L, H, W) and optionally pseudo (H, W), split
    (default train) and image_shape (to break the image/mask size agreement).
    """
    root.mkdir(parents=True, exist_ok=True)
    cams, pseudo = open_store(root / "cams"), open_store(root / "pseudo")
    rows = []
    for item in items:
        truth = np.asarray(item["truth"], np.uint8)
        shape = item.get("image_shape", truth.shape)
        Image.fromarray(np.full((*shape, 3), 120, np.uint8)).save(root / f"{item['id']}.png")
        Image.fromarray(truth).save(root / f"{item['id']}_mask.png")
        rows.append({"image": f"{item['id']}.png", "labels": ";".join(item["labels"]),
                     "mask": f"{item['id']}_mask.png", "split": item.get("split", "train")})
        buffer = io.BytesIO()
        labels = [CLASSES.index(name) for name in item["labels"]]
        np.savez(buffer, cams=np.asarray(item["cams"], np.float16), labels=np.array(labels, np.int16))
        cams.put_bytes(f"{item['id']}.npz", buffer.getvalue())
        if "pseudo" in item:
            pseudo.put_bytes(f"{item['id']}.png", encode_mask_png(np.asarray(item["pseudo"], np.uint8)))
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "labels", "mask", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv", cams, pseudo


def run(tmp_path, items, strict=False):
    manifest, cams, pseudo = write_dataset(tmp_path / "data", items)
    out = open_store(tmp_path / "eval")
    headline = evaluate(manifest, cams, pseudo, None, out, CONFIG, CLASSES, strict=strict)
    return headline, json.loads(out.get_bytes("metrics.json")), out


TRUTH = [[0, 0, 1, 1],
         [0, 0, 2, 2]]


def perfect_item(image_id="a"):
    truth = np.array(TRUTH)
    return {"id": image_id, "truth": truth, "labels": ["cat", "dog"],
            "cams": [(truth == 1) * 1.0, (truth == 2) * 1.0], "pseudo": truth}


def test_cams_and_pseudo_masks_equal_to_ground_truth_score_100(tmp_path):
    headline, _, _ = run(tmp_path, [perfect_item("a"), perfect_item("b")])
    assert headline["cam_miou"] == 100.0
    assert headline["pseudo_mask_miou"] == headline["pseudo_mask_confident_miou"] == 100.0
    assert headline["uncertain_fraction"] == 0.0
    assert headline["segmenter_miou"] is None


def test_pseudo_masks_without_their_cams_are_refused_with_the_missing_option_named(tmp_path):
    manifest, _, pseudo = write_dataset(tmp_path / "data", [perfect_item()])
    with pytest.raises(ConfigError, match="--cams"):
        evaluate(manifest, None, pseudo, None, open_store(tmp_path / "eval"), CONFIG, CLASSES)


def test_pseudo_mask_scores_with_uncertain_as_background_and_confident_only(tmp_path):
    item = {**perfect_item(), "pseudo": [[0, 1, 1, 1],
                                         [255, 0, 2, 255]]}
    headline, metrics, _ = run(tmp_path, [item])
    # Uncertain as background, prediction [[0,1,1,1],[0,0,2,0]] against TRUTH:
    #   bg: TP 3, gt 4, pred 4 -> 3/5; cat: TP 2, gt 2, pred 3 -> 2/3; dog: TP 1, gt 2, pred 1 -> 1/2
    #   mIoU = (3/5 + 2/3 + 1/2) / 3 = 58.89 %
    assert headline["pseudo_mask_miou"] == 58.89
    # Confident pixels only (the two 255s leave the count):
    #   bg: TP 2, gt 3, pred 2 -> 2/3; cat: TP 2, gt 2, pred 3 -> 2/3; dog: TP 1, gt 1, pred 1 -> 1
    #   mIoU = (2/3 + 2/3 + 1) / 3 = 77.78 %
    assert headline["pseudo_mask_confident_miou"] == 77.78
    assert headline["uncertain_fraction"] == 0.25  # 2 of 8 pixels
    assert metrics["pseudo_masks"]["uncertain_as_background"]["per_class"]["cat"]["iou"] == 66.67
    # The counts behind the first figure, kept for the report's heat map: rows ground truth, columns prediction.
    stored = metrics["confusion_matrices"]["pseudo_masks"]
    assert stored["classes"] == ["background", "cat", "dog"]
    assert stored["counts"] == [[3, 1, 0],
                                [0, 2, 0],
                                [1, 0, 1]]


CAM_CASE = {"id": "c", "truth": [[0, 0, 1, 1]], "labels": ["cat"], "cams": [[[0.1, 0.32, 0.38, 0.7]]]}


def test_best_threshold_is_the_one_that_separates_object_from_background(tmp_path):
    # Only a threshold in [0.32, 0.38) labels exactly the two cat pixels; 0.35 is the one in the sweep.
    headline, metrics, _ = run(tmp_path, [CAM_CASE])
    assert headline["cam_best_threshold"] == 0.35 and headline["cam_miou"] == 100.0
    sweep = {row["threshold"]: row["miou"] for row in metrics["cam"]["threshold_sweep"]}
    # At 0.05 all four pixels are cat: bg IoU 0/2 = 0, cat IoU 2/4 -> mIoU 25 %.
    assert sweep[0.05] == 25.0
    # At 0.60 only the 0.7 pixel is cat: bg 2/3, cat 1/2 -> 58.33 %.
    assert sweep[0.6] == 58.33
    assert headline["pseudo_mask_miou"] is None  # no pseudo mask for this image


def test_ground_truth_of_the_wrong_size_stops_evaluation_naming_the_file(tmp_path):
    item = {**perfect_item("wrong"), "image_shape": (2, 5)}
    with pytest.raises(DataError, match="wrong_mask.png"):
        run(tmp_path, [perfect_item("a"), item])


@pytest.mark.parametrize("store, key, data, figure, problem", [
    ("cams", "b.npz", b"not an npz", "cam_miou", "b.npz: not a CAM file"),
    ("pseudo", "b.png", b"not a png", "pseudo_mask_miou", "b.png: cannot decode pseudo mask: not in an image format"),
], ids=["cam_file", "pseudo_mask"])
def test_an_unreadable_input_is_skipped_and_counted_or_raises_naming_it_when_strict(tmp_path, store, key, data,
                                                                                     figure, problem):
    manifest, cams, pseudo = write_dataset(tmp_path / "data", [perfect_item("a"), perfect_item("b")])
    {"cams": cams, "pseudo": pseudo}[store].put_bytes(key, data)
    out = open_store(tmp_path / "eval")
    headline = evaluate(manifest, cams, pseudo, None, out, CONFIG, CLASSES)
    counts = json.loads(out.get_bytes("metrics.json"))["counts"]
    assert counts["train_scored"] == 1 and counts["train_skipped"] == 1 and headline[figure] == 100.0
    with pytest.raises(DataError, match=problem) as caught:
        evaluate(manifest, cams, pseudo, None, out, CONFIG, CLASSES, strict=True)
    assert " object at 0x" not in str(caught.value)


def test_report_holds_the_figures_of_metrics_json_and_the_overlays(tmp_path):
    item = {**perfect_item(), "pseudo": [[0, 1, 1, 1], [255, 0, 2, 255]]}
    _, metrics, out = run(tmp_path, [item, CAM_CASE])
    markdown, page = out.get_bytes("report.md").decode(), out.get_bytes("report.html").decode()
    figures = [metrics["headline"]["pseudo_mask_miou"], metrics["headline"]["pseudo_mask_confident_miou"],
               metrics["cam"]["at_best_threshold"]["miou"],
               metrics["pseudo_masks"]["confident_only"]["per_class"]["background"]["iou"]]
    for figure in figures:
        assert f"{figure:.2f}" in markdown and f"{figure:.2f}" in page
    assert sorted(out.list("overlays/")) == ["overlays/a.png", "overlays/c.png"]
    # The two overlays, the per-class IoU chart and a heat map of each confusion matrix stored (CAMs, pseudo masks).
    assert page.count("data:image/png;base64,") == 2 + 1 + 2
    assert sorted(metrics["confusion_matrices"]) == ["cam", "pseudo_masks"]
    assert [overlay["image_id"] for overlay in metrics["overlays"]] == ["a", "c"]
    with Image.open(io.BytesIO(out.get_bytes("overlays/a.png"))) as strip:
        # image | CAM | pseudo mask | ground truth, 4 px apart
        assert strip.size == (4 * 4 + 3 * 4, 2)


def test_masks_a_self_trained_segmenter_completed_are_scored_beside_the_pipelines_pseudo_masks():
    from wsseg.evaluation.train_scores import TrainScores

    scores = TrainScores(len(CLASSES), [0.5], with_pseudo_masks=True)
    truth = np.array(TRUTH)
    banded = np.array([[0, 255, 1, 1],
                       [0, 0, 255, 2]])
    relabelled = np.array([[0, 1, 1, 1],
                           [0, 0, 2, 2]])
    scores.add(truth, np.stack([(truth == 1) * 1.0, (truth == 2) * 1.0]), np.array([1, 2]), banded, relabelled)
    metrics = scores.metrics(CLASSES, None, None, {})
    # Relabelled against TRUTH: bg TP 3, gt 4, pred 3 -> 3/4; cat TP 2, gt 2, pred 3 -> 2/3; dog TP 2 -> 1.
    #   mIoU = (3/4 + 2/3 + 1) / 3 = 80.56 %
    assert metrics["headline"]["relabelled_mask_miou"] == 80.56
    # The pipeline's own figure still counts its band as background: [[0,0,1,1],[0,0,0,2]] against TRUTH:
    #   bg TP 4, gt 4, pred 5 -> 4/5; cat 1; dog TP 1, gt 2, pred 1 -> 1/2; mIoU = (4/5 + 1 + 1/2) / 3 = 76.67 %
    assert metrics["headline"]["pseudo_mask_miou"] == 76.67


def test_a_run_without_self_training_has_no_relabelled_figure(tmp_path):
    headline, metrics, _ = run(tmp_path, [perfect_item()])
    assert headline["relabelled_mask_miou"] is None and metrics["pseudo_masks"]["relabelled"] is None


@pytest.mark.parametrize("preset, augmented", [("cpu", True), ("gpu", True), ("cpu-tiny", False)])
def test_the_cpu_and_gpu_presets_score_a_segmenter_over_multi_scale_flipped_views(preset, augmented):
    settings = default_config(preset)
    assert settings["multi_scale"] is augmented and settings["flip"] is augmented
