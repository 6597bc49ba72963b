"""refine: dense CRF on CAMs, the uncertain band, palette PNGs, the process pool and resuming."""
import io
import json

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from wsseg.classes import IGNORE_INDEX, ClassList, voc_palette
from wsseg.data import load_samples, make_synthetic_voc, read_mask
from wsseg.errors import ConfigError, DataError
from wsseg.steps.refine import default_config, refine_with_crf
from wsseg.store import open_store
from wsseg.wsss.pseudo_masks import (
    background_score,
    confident_labels,
    decode_mask_png,
    encode_mask_png,
)
from wsseg.wsss.refinement import Refinement, refine_image
from wsseg.wsss.thresholds import PassLevels

CAT = 8
SQUARE = (slice(40, 88), slice(40, 88))


def square_scene(size=128):
    """A bright square on a dark background, and a CAM that is a blurry blob over its middle (as a CAM
    upsampled from a 1/16-resolution feature map looks)."""
    rng = np.random.default_rng(0)
    image = np.full((size, size, 3), 30.0)
    image[SQUARE] = 220
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    rows, cols = np.mgrid[:size, :size]
    blob = np.exp(-((rows - 64) ** 2 + (cols - 64) ** 2) / (2 * 22 ** 2))
    truth = np.zeros((size, size), bool)
    truth[SQUARE] = True
    return image, blob[None].astype(np.float32), truth


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def refinement(foreground=0.30, background=0.15, **settings):
    """Constant pass levels for the test classes, over the cpu preset's crf settings."""
    levels = PassLevels(dict.fromkeys(range(1, 21), foreground), dict.fromkeys(range(1, 21), background), "test")
    return Refinement({**default_config("cpu"), **settings}, levels, working_size=None)


def test_crf_sharpens_a_blurry_cam_to_the_image_edge():
    image, cams, truth = square_scene()
    best_thresholded = max(iou(cams[0] > t, truth) for t in np.arange(0.05, 0.65, 0.05))
    mask = refine_image(image, cams, np.array([CAT]), refinement())
    assert iou(mask == CAT, truth) > best_thresholded + 0.1  # 1.0 against 0.84 when written
    assert iou(mask == CAT, truth) > 0.95


def test_uncertain_band_lies_where_the_two_passes_disagree():
    image, cams, truth = square_scene()
    mask = refine_image(image, cams, np.array([CAT]), refinement(0.30, 0.05))
    # The low-background pass spreads the blob's tail (CAM > 0.05) over the dark surround; the high one does not.
    band = mask == IGNORE_INDEX
    assert band.sum() > 100
    assert not (band & truth).any()
    assert set(np.unique(mask)) == {0, CAT, IGNORE_INDEX}


def test_confident_labels_keep_agreement_and_mark_disagreement():
    confident_fg = np.array([[0, 3, 3, 0]])
    confident_bg = np.array([[0, 3, 5, 3]])
    assert confident_labels(confident_fg, confident_bg).tolist() == [[0, 3, 255, 255]]


def test_psa_background_is_one_minus_peak_to_the_alpha():
    cams = np.array([[[0.0, 0.5]], [[0.2, 1.0]]], dtype=np.float32)
    np.testing.assert_allclose(background_score(cams, "psa", 2.0), [[0.64, 0.0]])
    np.testing.assert_allclose(background_score(cams, "constant", 0.3), [[0.3, 0.3]])


def test_psa_background_refines_too():
    image, cams, truth = square_scene()
    mask = refine_image(image, cams, np.array([CAT]), Refinement({**default_config("cpu"), "background": "psa"},
                                                                 None, working_size=None))
    assert iou(mask == CAT, truth) > 0.9


def test_mask_png_round_trip_is_palette_mode():
    mask = np.array([[0, 8, 255], [15, 0, 8]], dtype=np.uint8)
    data = encode_mask_png(mask)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "P"
        assert image.getpalette() == voc_palette()
    np.testing.assert_array_equal(decode_mask_png(data), mask)


# ---- the step over a dataset ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Four 64-px synthetic train images and CAMs made by blurring each labelled class's ground truth."""
    root = make_synthetic_voc(tmp_path_factory.mktemp("voc"), train=4, val=0, seed=3, size=64)
    cams = open_store(tmp_path_factory.mktemp("cams"))
    for sample in load_samples(root, "train", ClassList()):
        truth = read_mask(sample.mask_path)
        maps = np.stack([gaussian_filter((truth == label).astype(np.float32), 4) for label in sample.labels])
        maps /= maps.max(axis=(1, 2), keepdims=True)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, cams=maps.astype(np.float16), labels=np.array(sample.labels, np.int16))
        cams.put_bytes(f"{sample.image_id}.npz", buffer.getvalue())
    return root, cams


def crf_config(processes=1, backend="auto"):
    # Only the step's own section: the run config's other sections belong to other steps.
    return {"crf": {**default_config("cpu-tiny"), "processes": processes, "backend": backend}, "working_size": None}


def run_refine(synthetic, out_dir, processes=1, strict=False, backend="auto"):
    root, cams = synthetic
    out = open_store(out_dir)
    return out, refine_with_crf(root, cams, out, crf_config(processes, backend), ClassList(), strict=strict)


def test_refine_writes_a_voc_palette_png_per_image(synthetic, tmp_path):
    out, summary = run_refine(synthetic, tmp_path)
    samples = load_samples(synthetic[0], "train", ClassList())
    assert summary["images"] == len(samples) and summary["skipped"] == 0
    assert 0 < summary["uncertain_fraction"] < 1 and summary["images_per_second"] > 0
    assert json.loads(out.get_bytes("summary.json")) == summary
    for sample in samples:
        with Image.open(io.BytesIO(out.get_bytes(f"{sample.image_id}.png"))) as png:
            assert png.mode == "P" and png.getpalette() == voc_palette()
            values = set(np.unique(np.array(png)).tolist())
        assert values <= {0, IGNORE_INDEX, *sample.labels}
        assert values & set(sample.labels), "every labelled image keeps some foreground"


def test_process_pool_gives_the_same_masks_as_one_process(synthetic, tmp_path):
    single, _ = run_refine(synthetic, tmp_path / "one", processes=1)
    pooled, summary = run_refine(synthetic, tmp_path / "two", processes=2)
    keys = [key for key in single.list() if key.endswith(".png")]
    assert keys == [key for key in pooled.list() if key.endswith(".png")] and summary["images"] == len(keys)
    for key in keys:
        np.testing.assert_array_equal(decode_mask_png(single.get_bytes(key)), decode_mask_png(pooled.get_bytes(key)))


def test_torch_crf_in_threads_gives_the_masks_of_the_pydensecrf_pool(synthetic, tmp_path):
    reference, _ = run_refine(synthetic, tmp_path / "pydensecrf", processes=2, backend="pydensecrf")
    threaded, summary = run_refine(synthetic, tmp_path / "torch", processes=2, backend="torch")
    keys = [key for key in reference.list() if key.endswith(".png")]
    assert summary["images"] == len(keys) == 4
    assert threaded.get_bytes("thresholds.json") == reference.get_bytes("thresholds.json")
    for key in keys:
        agree = decode_mask_png(threaded.get_bytes(key)) == decode_mask_png(reference.get_bytes(key))
        assert agree.mean() >= 0.99, key


def test_unknown_crf_backend_is_a_config_error(synthetic, tmp_path):
    with pytest.raises(ConfigError, match="crf.backend"):
        run_refine(synthetic, tmp_path, backend="densecrf")


def test_resume_skips_images_already_refined(synthetic, tmp_path):
    samples = load_samples(synthetic[0], "train", ClassList())
    out = open_store(tmp_path)
    earlier = encode_mask_png(np.zeros((64, 64), np.uint8))
    out.put_bytes(f"{samples[0].image_id}.png", earlier)
    _, summary = run_refine(synthetic, tmp_path)
    assert summary["already_done"] == 1 and summary["images"] == len(samples) - 1
    assert out.get_bytes(f"{samples[0].image_id}.png") == earlier


@pytest.fixture
def one_corrupt_image(synthetic, tmp_path):
    """A copy of the synthetic set whose first train image is truncated."""
    import shutil

    root = shutil.copytree(synthetic[0], tmp_path / "voc")
    broken = min((root / "JPEGImages").glob("*.jpg"))
    broken.write_bytes(broken.read_bytes()[:200])
    return root, broken


def test_corrupt_image_is_skipped_and_counted(synthetic, one_corrupt_image, tmp_path):
    root, _ = one_corrupt_image
    summary = refine_with_crf(root, synthetic[1], open_store(tmp_path / "out"), crf_config(), ClassList())
    assert summary["skipped"] == 1 and summary["images"] == 3


def test_corrupt_image_in_strict_mode_raises_naming_it(synthetic, one_corrupt_image, tmp_path):
    root, broken = one_corrupt_image
    with pytest.raises(DataError, match=broken.name):
        refine_with_crf(root, synthetic[1], open_store(tmp_path / "out"), crf_config(2), ClassList(), strict=True)


def test_unknown_background_method_is_a_config_error(synthetic, tmp_path):
    config = crf_config()
    config["crf"]["background"] = "saliency"
    with pytest.raises(ConfigError, match="crf.background"):
        refine_with_crf(synthetic[0], synthetic[1], open_store(tmp_path), config, ClassList())


@pytest.mark.parametrize("cpu_max, expected", [("200000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None)])
def test_worker_count_follows_the_cgroup_cpu_limit(tmp_path, monkeypatch, cpu_max, expected):
    import os

    from wsseg.steps import refine

    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(refine, "CGROUP_CPU_MAX", str(tmp_path / "cpu.max"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert refine.available_cpus() == (expected or 8)


def test_the_traffic_of_refines_worker_processes_counts_in_the_tasks(synthetic, s3_env):
    from wsseg.store.traffic import since, traffic

    root, local_cams = synthetic
    cams = open_store(s3_env).child("cams")
    for key in local_cams.list():
        cams.put_bytes(key, local_cams.get_bytes(key))
    cam_bytes = sum(len(local_cams.get_bytes(key)) for key in local_cams.list())
    before = traffic()
    summary = refine_with_crf(root, cams, open_store(s3_env).child("masks"), crf_config(processes=2), ClassList())
    moved = since(before)
    # Each image's CAM file is read and its mask written by a worker; the task's count holds them.
    assert moved["puts"] >= summary["images"] == 4
    assert moved["bytes_read"] >= cam_bytes
