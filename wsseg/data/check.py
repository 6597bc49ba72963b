"""`check_dataset`: read every file of a dataset and list all that is wrong with it, not just the first."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.data.dataset import dataset_splits, scan_samples
from wsseg.data.images import read_image, read_mask
from wsseg.data.samples import Problem, Sample
from wsseg.errors import DataError


@dataclass
class CheckReport:
    root: str
    images_per_split: dict[str, int] = field(default_factory=dict)
    masks_per_split: dict[str, int] = field(default_factory=dict)
    images_per_class: dict[str, int] = field(default_factory=dict)
    objects_per_class: dict[str, int] = field(default_factory=dict)
    unlabelled: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"dataset: {self.root}",
                 "images: " + _per_split(self.images_per_split),
                 "with masks: " + _per_split(self.masks_per_split),
                 f"{'class':<16}{'images':>8}{'objects':>9}"]
        lines += [f"{name:<16}{count:>8}{self.objects_per_class[name]:>9}"
                  for name, count in self.images_per_class.items()]
        lines.append(f"images without labels: {len(self.unlabelled)}")
        lines.append(f"problems: {len(self.problems)}")
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


def check_dataset(root: str | Path, classes: ClassList | None = None, splits: list[str] | None = None,
                  progress: bool = True) -> CheckReport:
    """Counts per split and class, and every problem found, each naming its file.

    Images and masks are decoded in full: a truncated JPEG only fails when its last bytes are read.
    """
    classes = classes or ClassList()
    report = CheckReport(root=str(root))
    samples = _collect_samples(root, splits or dataset_splits(root), classes, report)
    for sample in tqdm(samples, desc="checking", unit="img", disable=None if progress else True):
        report.problems.extend(check_sample_files(sample, classes))
    _count_classes(samples, classes, report)
    return report


def check_sample_files(sample: Sample, classes: ClassList) -> list[Problem]:
    """What is wrong with one sample's image and mask: unreadable, sizes that differ, stray mask values."""
    try:
        image = read_image(sample.image_path)
        mask = read_mask(sample.mask_path) if sample.mask_path else None
    except DataError as error:
        return [Problem(error.path, error.problem)]
    if mask is None:
        return []
    problems = []
    if mask.shape != image.shape[:2]:
        problems.append(Problem(str(sample.mask_path), f"mask is {mask.shape[1]}x{mask.shape[0]} but image "
                                f"{sample.image_path.name} is {image.shape[1]}x{image.shape[0]}"))
    stray = [int(value) for value in np.unique(mask) if value >= len(classes) and value != IGNORE_INDEX]
    if stray:
        problems.append(Problem(str(sample.mask_path), f"mask values {stray} are neither class indices "
                                f"0..{len(classes) - 1} nor {IGNORE_INDEX} (ignore)"))
    return problems


def _collect_samples(root, splits: list[str], classes: ClassList, report: CheckReport) -> list[Sample]:
    """The samples of all splits, each image once; split-level problems go into the report."""
    if not splits:
        report.problems.append(Problem(str(root), "no split lists found (expected train.txt and val.txt)"))
    unique: dict[str, Sample] = {}
    for split in splits:
        try:
            samples, problems = scan_samples(root, split, classes)
        except DataError as error:
            report.problems.append(Problem(error.path, error.problem))
            continue
        report.problems.extend(problems)
        report.images_per_split[split] = len(samples)
        report.masks_per_split[split] = sum(sample.mask_path is not None for sample in samples)
        unique.update((sample.image_id, sample) for sample in samples)
    return list(unique.values())


def _count_classes(samples: list[Sample], classes: ClassList, report: CheckReport) -> None:
    images = Counter(index for sample in samples for index in sample.labels)
    objects = Counter(obj.name for sample in samples for obj in sample.objects)
    report.images_per_class = {name: images[index] for index, name in enumerate(classes.names) if index}
    report.objects_per_class = {name: objects[name] for name in classes.foreground}
    report.unlabelled = [sample.image_id for sample in samples if not sample.labels]


def _per_split(counts: dict[str, int]) -> str:
    return ", ".join(f"{split} {count}" for split, count in counts.items()) or "none"
