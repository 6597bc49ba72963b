"""What a dataset reader yields: one `Sample` per image, and the `Problem`s it met on the way."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from wsseg.classes import ClassList
from wsseg.data.locations import Location
from wsseg.errors import DataError


@dataclass(frozen=True)
class ObjectAnnotation:
    """One `<object>` of a VOC annotation; `bbox` is (xmin, ymin, xmax, ymax) in VOC's 1-based pixels."""

    name: str
    difficult: bool = False
    truncated: bool = False
    bbox: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class Sample:
    image_id: str
    image_path: Location  # a local path, or a `StoredFile` for a dataset in a store
    labels: tuple[int, ...]
    mask_path: Location | None = None
    objects: tuple[ObjectAnnotation, ...] = ()
    # VOC's SegmentationObject PNG: instance numbers, where the dataset has one
    object_mask_path: Location | None = None


@dataclass(frozen=True)
class Problem:
    """Something wrong with one file; `check_dataset` collects these where `load_samples` raises the first."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_error(self) -> DataError:
        return DataError(self.path, self.message)


def class_indices(names: Iterable[str], classes: ClassList) -> tuple[tuple[int, ...], list[str]]:
    """Sorted foreground indices of `names`, and a message for each distinct name that is not a foreground class."""
    distinct = sorted(set(names))
    known = set(classes.foreground)
    labels = tuple(sorted(classes.index(name) for name in distinct if name in known))
    return labels, [f"unknown class name {name!r}; known: {', '.join(classes.foreground)}"
                    for name in distinct if name not in known]
