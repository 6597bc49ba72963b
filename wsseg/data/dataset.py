"""One entry point for every dataset format: a VOC 2012-layout folder or a manifest file, on local disk or in a store
(`s3://bucket/prefix` for a VOC folder, `s3://bucket/.../train.csv` for a manifest)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from wsseg.classes import ClassList
from wsseg.data.locations import StoredFile, is_store_uri
from wsseg.data.manifest import MANIFEST_SUFFIXES, is_manifest, manifest_splits, scan_manifest
from wsseg.data.samples import Problem, Sample
from wsseg.data.voc import (
    is_voc_root,
    read_split_ids,
    scan_stored_voc,
    scan_voc,
    split_file,
    stored_split_ids,
    stored_voc_splits,
    voc_splits,
)
from wsseg.errors import DataError


def load_samples(root: str | Path, split: str = "train", classes: ClassList | None = None,
                 keep: Callable[[str], bool] | None = None) -> list[Sample]:
    """The samples of `split` (those whose id `keep` accepts, in their order: a shard's slice); raises `DataError` at
    the first problem (`check_dataset` lists them all)."""
    samples, problems = scan_samples(root, split, classes or ClassList(), keep)
    if problems:
        raise problems[0].to_error()
    return samples


def scan_samples(root: str | Path, split: str, classes: ClassList,
                 keep: Callable[[str], bool] | None = None) -> tuple[list[Sample], list[Problem]]:
    """A VOC folder's images that `keep` refuses are never looked at (a shard of a stored folder reads its slice's
    annotations only); a manifest is one file, read whole, its rows then filtered."""
    if is_store_uri(root):
        samples, problems = _scan_stored(str(root), split, classes, keep)
    elif is_manifest(Path(root)):
        samples, problems = scan_manifest(Path(root), split, classes)
    else:
        _require_voc_root(Path(root))
        samples, problems = scan_voc(Path(root), split, classes, keep)
    return [sample for sample in samples if keep is None or keep(sample.image_id)], problems


def split_positions(root: str | Path, split: str, classes: ClassList) -> dict[str, int]:
    """Each image id of `split` by its place in the split's order, read from the split's list alone where the
    dataset is a VOC folder (a manifest is one file, read whole): where a shard's images stand among all."""
    if is_store_uri(root) and not _names_manifest(str(root)):
        image_ids = stored_split_ids(str(root), split)
    elif is_store_uri(root) or is_manifest(Path(root)):
        image_ids = [sample.image_id for sample in load_samples(root, split, classes)]
    else:
        _require_voc_root(Path(root))
        image_ids = read_split_ids(split_file(Path(root), split))
    return {image_id: position for position, image_id in enumerate(image_ids)}


def dataset_splits(root: str | Path) -> list[str]:
    """The splits a dataset defines: VOC's train and val lists where present, a manifest's split values."""
    if is_store_uri(root):
        stored = StoredFile(str(root)) if _names_manifest(str(root)) else None
        return manifest_splits(stored) if stored else stored_voc_splits(str(root))
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


def _scan_stored(uri: str, split: str, classes: ClassList,
                 keep: Callable[[str], bool] | None) -> tuple[list[Sample], list[Problem]]:
    if _names_manifest(uri):
        return scan_manifest(StoredFile(uri), split, classes)
    return scan_stored_voc(uri, split, classes, keep=keep)


def _names_manifest(uri: str) -> bool:
    return uri.lower().endswith(MANIFEST_SUFFIXES)
