"""The mine-cams step end to end: a real classifier trained on synthetic VOC, real stores, real npz files."""
import io
import json
import shutil

import numpy as np
import pytest

from wsseg.classes import ClassList
from wsseg.config import default_config
from wsseg.data import load_samples, make_synthetic_voc
from wsseg.errors import ConfigError, DataError
from wsseg.steps.mine_cams import mine_cams
from wsseg.steps.train_classifier import train_classifier
from wsseg.store import open_store

CLASSES = ClassList()


def small_config(**cams_overrides) -> dict:
    """cpu-tiny with a narrower backbone: the checkpoint stays small next to the CAMs the memory test counts."""
    config = default_config("cpu-tiny")
    config["classifier"]["model"]["backbone"].update(stem_channels=8, base_channels=8)
    # Two epochs at the backbone's rate: a 10× head rate pushes every class weight negative this early, and
    # all-zero maps would leave nothing for the normalisation checks to see.
    config["classifier"].update(epochs=2, head_lr_multiplier=1.0)
    config["cams"].update(cams_overrides)
    return config


@pytest.fixture(scope="module")
def classifier(tiny_voc, tmp_path_factory):
    store = open_store(tmp_path_factory.mktemp("classifier"))
    train_classifier(tiny_voc, store, small_config(), CLASSES)
    return store


def read_npz(store, key) -> dict:
    with np.load(io.BytesIO(store.get_bytes(key))) as data:
        return {name: data[name] for name in data.files}


def test_one_npz_per_labelled_image_with_max_normalised_float16_maps(tiny_voc, classifier, tmp_path):
    out = open_store(tmp_path / "cams")
    summary = mine_cams(tiny_voc, classifier, out, small_config(), CLASSES)

    samples = load_samples(tiny_voc, "train", CLASSES)
    assert summary["images"] == len(samples) == 12 and summary["skipped"] == 0
    assert sorted(out.list()) == sorted([f"{s.image_id}.npz" for s in samples] + [
        "summary.json", "cam_statistics.json", "shards/0-of-1/summary.json", "shards/0-of-1/cam_histograms.json"])
    assert json.loads(out.get_bytes("summary.json")) == summary
    for sample in samples:
        stored = read_npz(out, f"{sample.image_id}.npz")
        cams, labels = stored["cams"], stored["labels"]
        assert cams.dtype == np.float16 and labels.dtype == np.int16
        assert cams.shape == (len(sample.labels), 64, 64)
        assert tuple(labels) == sample.labels
        assert cams.min() >= 0 and cams.max() <= 1
        # A map is all zero where the barely trained classifier has no positive evidence for the class.
        assert all(peak in (0.0, 1.0) for peak in cams.max(axis=(1, 2)))
    peaks = [read_npz(out, f"{s.image_id}.npz")["cams"].max() for s in samples]
    assert max(peaks) == 1.0


def test_grad_cam_mines_the_same_maps_as_cam_for_a_gap_linear_head(tiny_voc, classifier, tmp_path):
    # α_c = w_c/(h·w) makes Grad-CAM a scaled CAM, and max-normalisation removes the scale.
    cam_out, grad_out = open_store(tmp_path / "cam"), open_store(tmp_path / "gradcam")
    # One scale only: at each scale Grad-CAM is CAM/(h·w), so across scales the two weigh scales differently.
    mine_cams(tiny_voc, classifier, cam_out, small_config(method="cam", scales=[1.0]), CLASSES)
    mine_cams(tiny_voc, classifier, grad_out, small_config(method="gradcam", scales=[1.0]), CLASSES)
    for key in cam_out.list():
        if key.endswith(".npz"):
            np.testing.assert_allclose(read_npz(grad_out, key)["cams"].astype(np.float32),
                                       read_npz(cam_out, key)["cams"].astype(np.float32), atol=2e-3)


def test_adversarial_climbing_mines_through_the_step_that_runs_without_gradients(tiny_voc, classifier, tmp_path):
    # Mining runs under no_grad; AdvCAM's climb needs the image's gradient and must take it itself.
    cam_out, climbed_out = open_store(tmp_path / "cam"), open_store(tmp_path / "advcam")
    mine_cams(tiny_voc, classifier, cam_out, small_config(method="cam", scales=[1.0]), CLASSES)
    mine_cams(tiny_voc, classifier, climbed_out, small_config(method="advcam", scales=[1.0]), CLASSES)
    largest_change = 0.0
    for key in cam_out.list():
        if key.endswith(".npz"):
            plain, climbed = (read_npz(store, key)["cams"].astype(np.float32) for store in (cam_out, climbed_out))
            assert climbed.shape == plain.shape and climbed.min() >= 0 and climbed.max() <= 1
            largest_change = max(largest_change, float(np.abs(climbed - plain).max()))
    assert largest_change > 0.05


def test_unknown_method_is_a_config_error(tiny_voc, classifier, tmp_path):
    with pytest.raises(ConfigError, match="scorecam"):
        mine_cams(tiny_voc, classifier, open_store(tmp_path / "cams"), small_config(method="scorecam"), CLASSES)


def test_rerunning_skips_images_already_mined(tiny_voc, classifier, tmp_path):
    out = open_store(tmp_path / "cams")
    mine_cams(tiny_voc, classifier, out, small_config(), CLASSES)
    files = sorted((tmp_path / "cams").glob("*.npz"))
    written = {path: path.stat().st_mtime_ns for path in files}

    again = mine_cams(tiny_voc, classifier, out, small_config(), CLASSES)
    assert (again["images"], again["existing"]) == (0, 12)
    assert {path: path.stat().st_mtime_ns for path in files} == written

    files[0].unlink()
    resumed = mine_cams(tiny_voc, classifier, out, small_config(), CLASSES)
    assert (resumed["images"], resumed["existing"]) == (1, 11)
    assert files[0].exists()


def test_decoding_workers_and_writer_threads_store_the_maps_of_one_process(tiny_voc, classifier, tmp_path):
    inline, pooled = open_store(tmp_path / "inline"), open_store(tmp_path / "pooled")
    mine_cams(tiny_voc, classifier, inline, small_config(decode_workers=0, writer_threads=0), CLASSES)
    summary = mine_cams(tiny_voc, classifier, pooled, small_config(decode_workers=2, writer_threads=3), CLASSES)
    keys = [key for key in inline.list() if key.endswith(".npz")]
    assert summary["images"] == len(keys) == 12
    assert keys == [key for key in pooled.list() if key.endswith(".npz")]
    for key in keys:
        expected, stored = read_npz(inline, key), read_npz(pooled, key)
        np.testing.assert_array_equal(stored["cams"], expected["cams"])
        np.testing.assert_array_equal(stored["labels"], expected["labels"])


@pytest.mark.parametrize("decode_workers", [0, 2])
def test_corrupt_and_unlabelled_images_are_skipped_and_counted(tiny_voc, classifier, tmp_path, decode_workers):
    root = shutil.copytree(tiny_voc, tmp_path / "voc")
    first, second = (root / "ImageSets/Segmentation/train.txt").read_text().split()[:2]
    jpeg = root / "JPEGImages" / f"{first}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    xml = root / "Annotations" / f"{second}.xml"
    xml.write_text(_without_objects(xml.read_text()))

    out = open_store(tmp_path / "cams")
    config = small_config(decode_workers=decode_workers)
    summary = mine_cams(root, classifier, out, config, CLASSES)
    assert (summary["images"], summary["skipped_corrupt"], summary["skipped_unlabelled"]) == (10, 1, 1)
    assert not out.exists(f"{first}.npz") and not out.exists(f"{second}.npz")

    with pytest.raises(DataError, match=first):
        mine_cams(root, classifier, open_store(tmp_path / "strict"), config, CLASSES, strict=True)


def _without_objects(xml: str) -> str:
    start, end = xml.find("<object>"), xml.rfind("</object>") + len("</object>")
    return xml[:start] + xml[end:]


def test_finished_maps_are_released_once_stored(classifier, tmp_path, monkeypatch):
    # What would make mining's memory grow with the number of images: finished maps kept after the writer stored
    # them. They live in torch's allocator (the arrays are views of its tensors), which tracemalloc does not see, so
    # the test follows each stored map with a weak reference instead of measuring a peak.
    import gc
    import weakref

    from wsseg.steps import mine_cams as mining

    root = make_synthetic_voc(tmp_path / "voc", train=6, val=0, seed=3, size=96)
    stored, store_cams = [], mining._store_cams

    def store_and_follow(out, sample, cams, histograms):
        store_cams(out, sample, cams, histograms)
        stored.append(weakref.ref(cams))

    monkeypatch.setattr(mining, "_store_cams", store_and_follow)
    mine_cams(root, classifier, open_store(tmp_path / "cams"), small_config(batch_size=2), CLASSES)
    gc.collect()
    assert len(stored) == 6 and all(reference() is None for reference in stored)


def test_classifier_and_cams_round_trip_through_an_s3_store(tiny_voc, s3_env):
    run = open_store(s3_env)
    train_classifier(tiny_voc, run.child("classifier"), small_config(), CLASSES)
    summary = mine_cams(tiny_voc, run.child("classifier"), run.child("cams"), small_config(), CLASSES)
    assert summary["images"] == 12
    assert len([key for key in run.child("cams").list() if key.endswith(".npz")]) == 12
    assert mine_cams(tiny_voc, run.child("classifier"), run.child("cams"), small_config(), CLASSES)["existing"] == 12
