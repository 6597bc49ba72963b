"""An mmseg dataset over one split of a wsseg dataset, with masks from an artifact store or the ground truth.

Images and masks (the dataset's, or pseudo masks `<image_id>.png`, values 0..K and 255 = uncertain, in a store)
stay where they are: a data info names each by its path or URI, and mmcv's `LoadImageFromFile` and mmseg's
`LoadAnnotations` read it through wsseg's mmengine file backend (`wsseg.segmenter.store_files`) when a batch
needs it, so a training pod's disk never holds the dataset. That is a request per image and mask per epoch; the
DataLoader's workers overlap them with training.

Building the data list reads no image: a pseudo mask's absence is known from the store's listing, and an image or
mask that cannot be read, or a mask that does not fit its image, is found when a batch fetches it. Training then
skips it (mmengine's dataset fetches another image in its place), logs it and records it in `skip_store`, where
every DataLoader worker and rank can write; `strict` raises instead. A validation set (`test_mode`) cannot leave
an image out once scoring has begun, so it checks every pair up front (`CHECK_THREADS` at a time).
"""
from __future__ import annotations

import logging
from functools import partial

import numpy as np
import torch
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.data import Sample, load_samples, read_image, read_mask
from wsseg.data.locations import Location, location
from wsseg.errors import DataError
from wsseg.runtime.read_ahead import read_ahead
from wsseg.segmenter import store_files  # noqa: F401  (registers the file backend the data infos are read with)
from wsseg.store import ArtifactStore, open_store

log = logging.getLogger(__name__)

# Images (and masks) read and checked at once when the data list is built.
CHECK_THREADS = 8
# The data-info key of a sample's image-level labels (foreground class indices from the dataset's
# annotations, never from its mask): what SEC's expand loss needs, packed only by pipelines that ask for it.
IMAGE_LABELS = "image_labels"


def labelled_classes(data_samples: list, num_classes: int, device) -> torch.Tensor:
    """(B, num_classes) bool: each packed sample's image labels (`IMAGE_LABELS` in its metainfo)."""
    labelled = torch.zeros(len(data_samples), num_classes, dtype=torch.bool, device=device)
    for row, sample in zip(labelled, data_samples, strict=True):
        row[list(sample.metainfo[IMAGE_LABELS])] = True
    return labelled


@DATASETS.register_module()
class WssegDataset(BaseSegDataset):
    """The images of `split` of the dataset at `dataset_root` (VOC folder or manifest).

    Masks come from the store at `mask_store` (a URI; reopened here, so S3 works in any process that has the
    credentials in its environment), read from it when a batch needs them, or from the dataset's own ground truth
    when `mask_store` is None. Class names come from `metainfo["classes"]`. Images whose image or mask is
    unreadable or inconsistent are left out and listed in `skipped` (image id -> problem); with `strict` the
    first one raises `DataError`. Each data info holds the sample's image-level labels under `IMAGE_LABELS`.
    `image_ids` keeps those images of the split alone (semi-supervised training's subsets); `without_masks` reads
    no mask at all (its unlabelled images, loaded by a pipeline without `LoadAnnotations`). `annotation_classes`
    names the classes the annotations use where the metainfo keeps only the first of them (an incremental step's
    seen classes, whose images may show later ones). `skip_store` (a URI) records each image left out as
    `<image_id>.txt`, its problem.
    """

    def __init__(self, dataset_root: str, split: str = "train", mask_store: str | None = None,
                 strict: bool = False, image_ids: list[str] | None = None,
                 without_masks: bool = False, annotation_classes: list[str] | None = None,
                 skip_store: str | None = None, **kwargs):
        self.dataset_root = str(dataset_root)
        self.split = split
        self.mask_store = mask_store
        self.strict = strict
        self.image_ids = None if image_ids is None else set(image_ids)
        self.without_masks = without_masks
        self.annotation_classes = annotation_classes
        self.skip_store = skip_store
        self.skipped: dict[str, str] = {}
        super().__init__(img_suffix="", seg_map_suffix=".png", reduce_zero_label=False,
                         ignore_index=IGNORE_INDEX, **kwargs)

    def load_data_list(self) -> list[dict]:
        classes = ClassList(self.annotation_classes or self.metainfo["classes"])
        store = open_store(self.mask_store) if self.mask_store else None
        samples = [sample for sample in load_samples(self.dataset_root, self.split, classes)
                   if self.image_ids is None or sample.image_id in self.image_ids]
        stored = set(store.list()) if store else set()
        locate = partial(self._mask_path, store=store, stored=stored)
        if self.test_mode:
            locate = partial(self._checked_mask_path, locate=locate, num_classes=len(classes))
        data_list = []
        for sample, mask_path in read_ahead(locate, samples, CHECK_THREADS):
            if isinstance(mask_path, DataError):
                self._skip(sample.image_id, mask_path)
                continue
            if isinstance(mask_path, Exception):
                raise mask_path
            data_list.append({"image_id": sample.image_id, "img_path": str(sample.image_path),
                              "seg_map_path": mask_path, "label_map": self.label_map, "reduce_zero_label": False,
                              "seg_fields": [], IMAGE_LABELS: sample.labels, "num_classes": len(classes)})
        if not data_list:
            raise DataError(self.dataset_root, f"no usable image{'' if self.without_masks else ' with a mask'} "
                                               f"in split {self.split!r}"
                                               f"{f' (masks from {store.uri})' if store else ''}")
        return data_list

    def prepare_data(self, idx: int):
        """The pipeline's output for image `idx`, or None (mmengine then fetches another) where its image or mask
        is unusable: skipped and recorded, or raised with `strict`."""
        info = self.get_data_info(idx)
        try:
            return super().prepare_data(idx)
        except DataError as problem:
            self._skip(info["image_id"], problem)
        except Exception:
            # mmcv's loaders fail on a corrupt file without naming it: read the pair again to say what is wrong.
            problem = _pair_problem(info)
            if problem is None:
                raise
            self._skip(info["image_id"], problem)
        return None

    def _skip(self, image_id: str, problem: DataError) -> None:
        if self.strict:
            raise problem
        log.warning("skipping %s: %s", image_id, problem)
        self.skipped[image_id] = str(problem)
        if self.skip_store:
            open_store(self.skip_store).put_bytes(f"{image_id}.txt", str(problem).encode())

    def _mask_path(self, sample: Sample, store: ArtifactStore | None, stored: set[str]) -> str | None:
        if self.without_masks:
            return None
        mask_path = _pseudo_mask(sample.image_id, store, stored) if store else sample.mask_path
        if mask_path is None:
            raise DataError(sample.image_path, "no ground-truth mask for this image")
        return str(mask_path)

    def _checked_mask_path(self, sample: Sample, locate, num_classes: int) -> str | None:
        mask_path = locate(sample)
        problem = _pair_problem({"img_path": str(sample.image_path), "seg_map_path": mask_path,
                                 "num_classes": num_classes})
        if problem:
            raise problem
        return mask_path


def _pair_problem(info: dict) -> DataError | None:
    """What makes a data info's image or mask unusable (unreadable, or a mask that does not fit its image), or None
    when both are fine."""
    try:
        image = read_image(location(info["img_path"], ""))
        if info["seg_map_path"] is not None:
            check_mask(read_mask(location(info["seg_map_path"], "")), image.shape[:2], info["num_classes"],
                       info["seg_map_path"])
    except DataError as problem:
        return problem
    return None


def _pseudo_mask(image_id: str, store: ArtifactStore, stored: set[str]) -> Location:
    """Where the store keeps the image's pseudo mask (`stored`: its keys); `DataError` when it has none."""
    key = f"{image_id}.png"
    if key not in stored:
        raise DataError(f"{store.uri}/{key}", "no pseudo mask for this image")
    return location(f"{store.uri}/{key}", "")


def check_mask(mask: np.ndarray, image_size: tuple[int, int], num_classes: int, path) -> None:
    """Raise `DataError` unless `mask` covers the image and holds only class indices or the ignore value."""
    if mask.shape != tuple(image_size):
        raise DataError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                              f"{image_size[1]}x{image_size[0]}")
    values = np.unique(mask)
    stray = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if stray.size:
        raise DataError(path, f"mask holds values {stray.tolist()} outside the {num_classes} classes "
                              f"and the ignore value {IGNORE_INDEX}")
