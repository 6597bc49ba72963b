"""Incremental task splits following WILSON / MiB (METHODS.md §2)."""
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
    assert main(["data", "splits", str(tiny_voc), "--mode", "overlap", "--step-zero-manifest", str(manifest)]) == 2
