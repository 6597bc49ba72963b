"""One entry point for every dataset format: a VOC 2012-layout folder or a manifest file."""
from __future__ import annotations

from pathlib import Path

from wsseg.classes import ClassList
from wsseg.data.manifest import MANIFEST_SUFFIXES, is_manifest, manifest_splits, scan_manifest
from wsseg.data.samples import Problem, Sample
from wsseg.data.voc import is_voc_root, scan_voc, voc_splits
from wsseg.errors import DataError


def load_samples(root: str | Path, split: str = "train", classes: ClassList | None = None) -> list[Sample]:
    """The samples of `split`; raises `DataError` at the first problem (`check_dataset` lists them all)."""
    samples, problems = scan_samples(root, split, classes or ClassList())
    if problems:
        raise problems[0].to_error()
    return samples


def scan_samples(root: str | Path, split: str, classes: ClassList) -> tuple[list[Sample], list[Problem]]:
    root = Path(root)
    if is_manifest(root):
        return scan_manifest(root, split, classes)
    _require_voc_root(root)
    return scan_voc(root, split, classes)


def dataset_splits(root: str | Path) -> list[str]:
    """The splits a dataset defines: VOC's train and val lists where present, a manifest's split values."""
    root = Path(root)
    if is_manifest(root):
        return manifest_splits(root)
    _require_voc_root(root)
    return voc_splits(root)


def _require_voc_root(root: Path) -> None:
    if not root.exists():
        raise DataError(root, "dataset not found")
    if not is_voc_root(root):
        raise DataError(root, "not a dataset: expected a VOC 2012-layout folder (JPEGImages/, Annotations/, "
                              f"ImageSets/Segmentation/) or a manifest file ({', '.join(MANIFEST_SUFFIXES)})")
