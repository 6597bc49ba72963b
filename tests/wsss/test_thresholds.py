"""Pseudo-mask thresholds chosen per run from the CAMs, never from the training images' pixel labels."""
import io
import json
import shutil

import numpy as np
import pytest

from tests.wsss.test_refine import crf_config, synthetic  # noqa: F401  (the fixture)
from wsseg.classes import ClassList
from wsseg.data import load_samples, read_mask
from wsseg.errors import ConfigError
from wsseg.steps.refine import THRESHOLDS, refine_with_crf
from wsseg.store import open_store
from wsseg.wsss.pseudo_masks import decode_mask_png, read_cam_file
from wsseg.wsss.thresholds import CamHistograms, most_stable_scale, otsu_threshold


def bimodal(low: float, high: float, bins: int = 256) -> np.ndarray:
    values = np.concatenate([np.random.default_rng(0).normal(low, 0.04, 6000),
                             np.random.default_rng(1).normal(high, 0.06, 2000)])
    return np.histogram(np.clip(values, 0, 1), bins, (0, 1))[0]


@pytest.mark.parametrize("low, high", [(0.05, 0.5), (0.02, 0.2), (0.2, 0.8)])
def test_otsu_splits_a_bimodal_histogram_between_its_modes(low, high):
    assert low + 0.02 < otsu_threshold(bimodal(low, high)) < high - 0.02


def test_the_background_pass_cuts_the_values_below_the_foreground_threshold_again():
    histograms = CamHistograms(3)
    rng = np.random.default_rng(0)
    tail = np.clip(rng.normal(0.15, 0.03, 3000), 0, 1)     # the CAM's tail around its object
    background = np.clip(rng.normal(0.01, 0.01, 9000), 0, 1)
    obj = np.clip(rng.normal(0.7, 0.1, 3000), 0, 1)
    histograms.add(np.concatenate([background, tail, obj])[None], np.array([2]))
    levels = histograms.levels()
    assert set(levels.foreground) == {2}
    assert 0.2 < levels.foreground[2] < 0.6 and 0.03 < levels.background[2] < 0.13


def refine(root, cams, out_dir, **crf_settings) -> dict:
    config = crf_config()
    config["crf"].update(crf_settings)
    refine_with_crf(root, cams, open_store(out_dir), config, ClassList())
    store = open_store(out_dir)
    return {key: decode_mask_png(store.get_bytes(key)) for key in store.list() if key.endswith(".png")}


def transformed_cams(cams, tmp_path, transform):
    """A copy of a CAM store with every map passed through `transform` (then max-normalised again)."""
    out = open_store(tmp_path)
    for key in (key for key in cams.list() if key.endswith(".npz")):
        maps, labels = read_cam_file(cams.get_bytes(key))
        maps = transform(maps)
        maps /= maps.max(axis=(1, 2), keepdims=True)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, cams=maps.astype(np.float16), labels=labels.astype(np.int16))
        out.put_bytes(key, buffer.getvalue())
    return out


def with_a_discriminative_peak(maps: np.ndarray) -> np.ndarray:
    """Each map damped to 0.3 and topped by a narrow peak where it was highest: a CAM that fires mostly on the
    most discriminative part, whose object plateau sits far lower after max-normalisation."""
    rows, cols = np.mgrid[:maps.shape[1], :maps.shape[2]]
    peaked = []
    for plane in maps:
        row, col = np.unravel_index(plane.argmax(), plane.shape)
        peaked.append(0.3 * plane + np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / 8.0))
    return np.stack(peaked)


def accuracy(root, masks: dict) -> float:
    """Pixel accuracy against the ground truth, uncertain pixels counted as background (void pixels left out)."""
    scores = []
    for sample in load_samples(root, "train", ClassList()):
        truth, mask = read_mask(sample.mask_path), masks[f"{sample.image_id}.png"]
        valid = truth != 255
        scores.append((np.where(mask == 255, 0, mask)[valid] == truth[valid]).mean())
    return float(np.mean(scores))


def test_adaptive_thresholds_follow_the_cams_where_a_constant_would_not(synthetic, tmp_path):  # noqa: F811
    root, cams = synthetic
    peaked = transformed_cams(cams, tmp_path / "peaked", with_a_discriminative_peak)
    adaptive = refine(root, peaked, tmp_path / "adaptive")
    constant = refine(root, peaked, tmp_path / "constant", background="constant")
    levels = [json.loads(open_store(tmp_path / name).get_bytes(THRESHOLDS)) for name in ("adaptive", "constant")]
    assert max(levels[0]["foreground"].values()) < min(levels[1]["foreground"].values())
    assert accuracy(root, adaptive) > 0.93   # 0.946 when written; 0.998 on the CAMs before peaking
    assert accuracy(root, adaptive) > accuracy(root, constant) + 0.05   # the constant 0.30 gave 0.854


def test_pseudo_masks_do_not_change_when_the_training_pixel_labels_are_deleted(synthetic, tmp_path):  # noqa: F811
    root, cams = synthetic
    with_labels = refine(root, cams, tmp_path / "with")
    unlabelled = shutil.copytree(root, tmp_path / "voc")
    for sample in load_samples(unlabelled, "train", ClassList()):
        sample.mask_path.unlink()
    assert all(sample.mask_path is None for sample in load_samples(unlabelled, "train", ClassList()))
    without_labels = refine(unlabelled, cams, tmp_path / "without")
    assert with_labels.keys() == without_labels.keys() and with_labels
    for key, mask in with_labels.items():
        np.testing.assert_array_equal(mask, without_labels[key])


def test_a_resumed_step_keeps_the_thresholds_it_chose(synthetic, tmp_path):  # noqa: F811
    root, cams = synthetic
    refine(root, cams, tmp_path)
    store = open_store(tmp_path)
    chosen = json.loads(store.get_bytes(THRESHOLDS))
    chosen["foreground"] = dict.fromkeys(chosen["foreground"], 0.99)
    store.put_bytes(THRESHOLDS, json.dumps(chosen).encode())
    first = min(key for key in store.list() if key.endswith(".png"))
    store.delete(first)
    resumed = refine(root, cams, tmp_path)
    assert not (resumed[first] > 0).any() or (resumed[first] == 255).any(), "the stored 0.99 was used"
    assert json.loads(store.get_bytes(THRESHOLDS))["foreground"] == chosen["foreground"]


def test_calibration_scales_the_thresholds_to_the_named_images_best(synthetic, tmp_path):  # noqa: F811
    root, cams = synthetic
    # CAMs that spill far past their objects: the Otsu cut lies too low, and the calibration images say so.
    spilled = transformed_cams(cams, tmp_path / "spilled", lambda maps: maps ** 0.3)
    named = [sample.image_id for sample in load_samples(root, "train", ClassList())[:2]]
    plain = refine(root, spilled, tmp_path / "plain")
    calibrated = refine(root, spilled, tmp_path / "calibrated", calibration=named)
    levels = json.loads(open_store(tmp_path / "calibrated").get_bytes(THRESHOLDS))
    assert levels["source"] == "calibration" and levels["details"]["images"] == named
    by_scale = levels["details"]["miou_by_scale"]
    assert levels["details"]["scale"] == float(max(by_scale, key=by_scale.get)) > 1, "spilled CAMs need higher cuts"

    def foreground_iou(masks):
        scores = []
        for sample in load_samples(root, "train", ClassList()):
            truth, mask = read_mask(sample.mask_path), masks[f"{sample.image_id}.png"]
            scores.append(((mask == truth) & (truth > 0) & (truth < 255)).sum() / ((truth > 0) | (mask > 0)).sum())
        return np.mean(scores)

    assert foreground_iou(calibrated) > foreground_iou(plain)


def test_calibration_images_must_be_labelled_train_images(synthetic, tmp_path):  # noqa: F811
    root, cams = synthetic
    with pytest.raises(ConfigError, match="not in the train split: nope"):
        refine(root, cams, tmp_path, calibration=["nope"])


def test_the_most_stable_scale_lies_where_the_labelling_stops_changing():
    edges = {0.5: 10, 0.7: 30, 1.0: 31, 1.4: 32, 2.0: 60}   # the label map's boundary column at each scale

    def labellings(scale):
        mask = np.zeros((4, 100), np.uint8)
        mask[:, :edges[scale]] = 1
        return [mask]

    scale, shifts = most_stable_scale(labellings, tuple(edges))
    assert scale == pytest.approx(np.sqrt(0.7 * 1.0)) and shifts[1] == min(shifts)


def test_stability_is_how_far_edges_move_not_how_many_pixels_change():
    # A large object's edges move 2 px between the first two scales, a small one's 6 px between the last two: fewer
    # pixels change there, only because its edges are shorter.
    sides = {1.0: 60, 1.2: 58, 1.6: 14, 2.0: 8}

    def labellings(scale):
        mask = np.zeros((100, 100), np.uint8)
        mask[:sides[scale], :sides[scale]] = 1
        return [mask]

    scale, shifts = most_stable_scale(labellings, tuple(sides))
    assert scale == pytest.approx(np.sqrt(1.0 * 1.2))
    assert shifts[0] == pytest.approx(2.0, abs=0.1) and shifts[2] == pytest.approx(6.0, abs=0.5)


def with_a_halo(maps: np.ndarray) -> np.ndarray:
    """Each map plus a broad, weaker copy of itself: the smooth spill of MDC's and ACoL's maps past the object."""
    from scipy.ndimage import gaussian_filter

    return np.stack([plane + 0.6 * gaussian_filter(plane, 8) / gaussian_filter(plane, 8).max() for plane in maps])


def test_the_stability_scan_raises_the_cut_for_cams_that_spill_past_their_objects(synthetic, tmp_path):  # noqa: F811
    root, cams = synthetic
    spilled = transformed_cams(cams, tmp_path / "spilled", with_a_halo)
    plain_masks, spilled_masks = refine(root, cams, tmp_path / "plain"), refine(root, spilled, tmp_path / "halo")
    plain, halo = (json.loads(open_store(tmp_path / name).get_bytes(THRESHOLDS)) for name in ("plain", "halo"))
    assert halo["details"]["scale"] > plain["details"]["scale"]
    assert accuracy(root, spilled_masks) > 0.9 and accuracy(root, plain_masks) > 0.95


def test_the_levels_reduce_reads_the_annotations_of_its_scanned_images_alone(synthetic, tmp_path, s3_env,  # noqa: F811
                                                                              monkeypatch):
    from wsseg.steps.refine import choose_refine_levels
    from wsseg.store.traffic import since, traffic
    from wsseg.wsss import pass_levels

    root, cams = synthetic
    stored = open_store(s3_env).child("data")
    for path in root.rglob("*"):
        if path.is_file():
            stored.put_file(str(path.relative_to(root)), path)
    train_ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    monkeypatch.setattr(pass_levels, "STABILITY_SAMPLE", 2)
    local = choose_refine_levels(root, cams, open_store(tmp_path / "local"), crf_config(), ClassList())
    before = traffic()
    streamed = choose_refine_levels(stored.uri, cams, open_store(tmp_path / "streamed"), crf_config(), ClassList())
    read = since(before)
    # The split's list (for the ids, then for the scanned slice) and the annotation and image of each scanned image:
    # not every train image's annotation.
    assert len(train_ids) > 2 and read["gets"] == 2 + 2 * 2
    assert local == streamed
    chosen = [open_store(tmp_path / name).get_bytes(THRESHOLDS) for name in ("local", "streamed")]
    assert chosen[0] == chosen[1]
