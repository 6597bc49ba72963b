"""Incremental task splits following WILSON / MiB (docs/METHODS.md §2.7)."""
from pathlib import Path

import numpy as np
import pytest

from wsseg.cli import main
from wsseg.data import Sample, incremental_split, load_samples, parse_task
from wsseg.errors import ConfigError


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    """Images with 1-3 random VOC classes each, enough that every protocol keeps something."""
    rng = np.random.default_rng(0)
    return [Sample(f"{index:04d}", Path(f"{index:04d}.jpg"),
                   tuple(sorted(int(c) for c in rng.choice(np.arange(1, 21), rng.integers(1, 4), replace=False))))
            for index in range(400)]


def original_labels(samples):
    return {sample.image_id: set(sample.labels) for sample in samples}


@pytest.mark.parametrize("task, step", [("15-5", 0), ("15-5", 1), ("15-1", 0), ("15-1", 2), ("10-10", 0)])
def test_disjoint_steps_hold_no_future_class_and_at_least_one_current(samples, task, step):
    plan = parse_task(task, 20)
    current, seen = set(plan.step_classes(step)), set(plan.seen_classes(step))
    labels = original_labels(samples)
    kept = incremental_split(samples, task, step, "disjoint")
    assert kept
    for sample in kept:
        assert labels[sample.image_id] <= seen
        assert labels[sample.image_id] & current


def test_overlap_contains_disjoint_and_admits_future_classes(samples):
    labels = original_labels(samples)
    for step in range(2):
        overlap = {s.image_id for s in incremental_split(samples, "15-5", step, "overlap")}
        disjoint = {s.image_id for s in incremental_split(samples, "15-5", step, "disjoint")}
        assert disjoint <= overlap
    step0 = incremental_split(samples, "15-5", 0, "overlap")
    assert any(labels[sample.image_id] & set(range(16, 21)) for sample in step0)
    assert len(step0) == sum(bool(set(s.labels) & set(range(1, 16))) for s in samples)


def test_labels_are_cut_to_the_current_classes(samples):
    for step in range(6):
        current = set(parse_task("15-1", 20).step_classes(step))
        for sample in incremental_split(samples, "15-1", step, "overlap"):
            assert sample.labels and set(sample.labels) <= current
    labels = original_labels(samples)
    step1 = incremental_split(samples, "15-5", 1, "disjoint")
    assert any(labels[sample.image_id] - set(sample.labels) for sample in step1), "old classes stay unlabelled"


@pytest.mark.parametrize("mode", ["disjoint", "overlap"])
def test_a_step_of_any_size_keeps_what_a_task_step_of_its_classes_keeps(samples, mode):
    from wsseg.data.splits import step_samples

    assert step_samples(samples, (16, 17, 18, 19, 20), 20, mode) == incremental_split(samples, "15-5", 1, mode)
    # 15 old and 2 new classes: no task of whole steps has this step (an inbox batch that carries another's class).
    with pytest.raises(ConfigError, match="whole steps"):
        parse_task("15-2", 20)
    labels = original_labels(samples)
    kept = step_samples(samples, (16, 17), 17, mode)
    assert {s.image_id for s in kept} == {key for key, value in labels.items()
                                         if value & {16, 17} and (mode == "overlap" or max(value) <= 17)}
    assert all(set(s.labels) <= {16, 17} for s in kept)


def test_task_steps_and_classes():
    assert parse_task("15-1", 20).num_steps == 6
    assert parse_task("15-5", 20).step_classes(1) == (16, 17, 18, 19, 20)
    assert parse_task("15-1", 20).step_classes(3) == (18,)
    assert parse_task("10-10", 20).step_classes(0) == tuple(range(1, 11))
    for bad in ("15-4", "20-1", "fifteen", "0-5"):
        with pytest.raises(ConfigError):
            parse_task(bad, 20)
    with pytest.raises(ConfigError):
        parse_task("15-5", 20).step_classes(2)


def test_disjoint_steps_never_share_an_image(samples):
    steps = [{s.image_id for s in incremental_split(samples, "15-1", step, "disjoint")} for step in range(6)]
    assert sum(map(len, steps)) == len(set().union(*steps))


def test_splits_command_prints_counts_per_step(tiny_voc, capsys):
    assert main(["data", "splits", str(tiny_voc), "--task", "15-1", "--mode", "overlap"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    train = load_samples(tiny_voc, "train")
    expected = [len(incremental_split(train, "15-1", step, "overlap")) for step in range(6)]
    assert [int(line.split()[2]) for line in lines] == expected


def test_step_zero_manifest_holds_the_old_class_images_with_masks_of_old_classes_only(tiny_voc, tmp_path, capsys):
    import numpy as np

    from wsseg.classes import VOC_CLASSES, ClassList
    from wsseg.data import read_mask

    manifest = tmp_path / "step0.csv"
    assert main(["data", "splits", str(tiny_voc), "--task", "15-1", "--step-zero-manifest", str(manifest)]) == 0
    assert "first 16" in capsys.readouterr().out
    old_classes = ClassList(VOC_CLASSES[:16])
    step_zero = load_samples(manifest, "train", old_classes)
    assert [s.image_id for s in step_zero] == [s.image_id for s in incremental_split(
        load_samples(tiny_voc, "train"), "15-1", 0, "disjoint")]
    assert step_zero and all(s.mask_path for s in step_zero)
    assert all(set(np.unique(read_mask(s.mask_path))) <= {*range(16), 255} for s in step_zero)
    assert not (tmp_path / "step0_masks").exists(), "disjoint step 0 trains on the dataset's own masks"


def test_overlap_step_zero_sets_later_classes_to_background_in_masks_train_segmenter_reads(
        tiny_voc, tmp_path, capsys):
    from PIL import Image

    from tests.segmenter.test_segmenter import build_dataset
    from wsseg.classes import IGNORE_INDEX, VOC_CLASSES, ClassList
    from wsseg.data import read_mask

    manifest = tmp_path / "step0.csv"
    assert main(["data", "splits", str(tiny_voc), "--task", "15-5", "--mode", "overlap",
                 "--step-zero-manifest", str(manifest)]) == 0
    old_classes = ClassList(VOC_CLASSES[:16])
    originals = {s.image_id: s for s in incremental_split(load_samples(tiny_voc, "train"), "15-5", 0, "overlap")}
    step_zero = load_samples(manifest, "train", old_classes)
    assert [s.image_id for s in step_zero] == list(originals)
    changed_pixels, changed_images = 0, 0
    for sample in step_zero:
        source = read_mask(originals[sample.image_id].mask_path)
        written = read_mask(sample.mask_path)
        later = (source > 15) & (source != IGNORE_INDEX)
        assert sample.mask_path.parent == tmp_path / "step0_masks"
        assert (written[later] == 0).all() and (written[~later] == source[~later]).all()
        changed_pixels, changed_images = changed_pixels + int(later.sum()), changed_images + bool(later.any())
    assert changed_images >= 2, "the tiny set's step 0 should show later classes under overlap"
    assert f"set {changed_pixels} pixels of {changed_images} images to background" in capsys.readouterr().out
    first = step_zero[0]
    with Image.open(first.mask_path) as written, Image.open(originals[first.image_id].mask_path) as source:
        assert written.mode == source.mode == "P" and written.getpalette() == source.getpalette()

    dataset = build_dataset(manifest, old_classes, None, strict=True)
    assert len(dataset) == len(step_zero)
    np.testing.assert_array_equal(dataset[0]["data_samples"].gt_sem_seg.data[0].numpy(), read_mask(first.mask_path))
