"""Reading a manifest for data not laid out as VOC: a `.csv` (header `image,labels[,mask][,split][,id]`,
labels separated by `;` or spaces) or
a `.jsonl` file (one `{"image": ..., "labels": [...], "mask": ..., "split": ...}` object per line).

Relative paths resolve against the manifest's folder (a local one, or the store prefix of a manifest in a store);
a row may also name its image by a store URI (`s3://bucket/key`). Rows without a split belong to `train`. Stored
images are not looked up one by one as the manifest is read (a request per row); one that is missing is skipped
where a step reads it, as an unreadable image is.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from wsseg.classes import ClassList
from wsseg.data.locations import Location, StoredFile, location, read_location
from wsseg.data.samples import Problem, Sample, class_indices
from wsseg.errors import DataError

MANIFEST_SUFFIXES = (".csv", ".jsonl")
DEFAULT_SPLIT = "train"
REQUIRED_COLUMNS = ("image", "labels")


@dataclass(frozen=True)
class ManifestRow:
    where: str  # "<manifest>:<line>", what a problem names
    image: str
    labels: tuple[str, ...]
    mask: str | None
    split: str
    image_id: str | None


def is_manifest(path: Location) -> bool:
    return path.suffix.lower() in MANIFEST_SUFFIXES and (isinstance(path, StoredFile) or path.is_file())


def manifest_splits(path: Location) -> list[str]:
    return sorted({row.split for row in read_manifest(path)})


def read_manifest(path: Location) -> list[ManifestRow]:
    reader = _csv_rows if path.suffix.lower() == ".csv" else _jsonl_rows
    return list(reader(read_location(path).decode(), path))


def scan_manifest(path: Location, split: str, classes: ClassList) -> tuple[list[Sample], list[Problem]]:
    """Every usable row of `split` as a sample, and a problem for each missing local file or unknown class name."""
    samples, problems, seen = [], [], {}
    folder = path.parent_uri if isinstance(path, StoredFile) else path.parent
    for row in read_manifest(path):
        if row.split != split:
            continue
        image_path = location(row.image, folder)
        if _missing(image_path):
            problems.append(Problem(row.where, f"image {image_path} does not exist"))
            continue
        mask_path = location(row.mask, folder) if row.mask else None
        if mask_path is not None and _missing(mask_path):
            problems.append(Problem(row.where, f"mask {mask_path} does not exist"))
            mask_path = None
        image_id = row.image_id or image_path.stem
        if image_id in seen:
            problems.append(Problem(row.where, f"image id {image_id!r} repeats {seen[image_id]}; "
                                               "give rows an 'id' to tell them apart"))
            continue
        seen[image_id] = row.where
        labels, unknown = class_indices(row.labels, classes)
        problems.extend(Problem(row.where, message) for message in unknown)
        samples.append(Sample(image_id, image_path, labels, mask_path))
    return samples, problems


def _missing(where: Location) -> bool:
    return isinstance(where, Path) and not where.is_file()


def manifest_labels(path: Location, split: str, classes: ClassList) -> list[tuple[int, ...]]:
    """Each `split` row's class indices, read without looking for its image: what a check needs before the images
    are fetched. Raises `DataError` at the first unknown class name."""
    labels = []
    for row in read_manifest(path):
        if row.split == split:
            indices, unknown = class_indices(row.labels, classes)
            if unknown:
                raise DataError(row.where, unknown[0])
            labels.append(indices)
    return labels


def write_manifest(samples: list[Sample], classes: ClassList, path: Path, split: str = DEFAULT_SPLIT) -> Path:
    """A CSV manifest of `samples` (absolute paths, labels by name) that `load_samples` reads back."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("image", "labels", "mask", "split", "id"))
        for sample in samples:
            writer.writerow((_written(sample.image_path), ";".join(classes.names[label] for label in sample.labels),
                             _written(sample.mask_path) if sample.mask_path else "", split, sample.image_id))
    return path


def _written(where: Location) -> str:
    return str(where) if isinstance(where, StoredFile) else str(where.resolve())


def _split_labels(text: str) -> tuple[str, ...]:
    return tuple(name for name in re.split(r"[;,\s]+", text.strip()) if name)


def _csv_rows(content: str, path: Location):
    reader = csv.DictReader(io.StringIO(content, newline=""))
    missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or ())]
    if missing:
        raise DataError(path, f"the CSV header lacks {', '.join(missing)}; expected image,labels[,mask][,split]")
    for line, record in enumerate(reader, start=2):
        yield ManifestRow(f"{path}:{line}", record["image"].strip(), _split_labels(record["labels"] or ""),
                          (record.get("mask") or "").strip() or None,
                          (record.get("split") or "").strip() or DEFAULT_SPLIT,
                          (record.get("id") or "").strip() or None)


def _jsonl_rows(content: str, path: Location):
    for line, text in enumerate(content.splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{path}:{line}"
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(where, f"not valid JSON: {error}") from None
        if not isinstance(record, dict) or not isinstance(record.get("image"), str):
            raise DataError(where, 'each line must be an object with an "image" path')
        labels = record.get("labels") or []
        yield ManifestRow(where, record["image"],
                          _split_labels(labels) if isinstance(labels, str) else tuple(map(str, labels)),
                          record.get("mask") or None, record.get("split") or DEFAULT_SPLIT, record.get("id"))
