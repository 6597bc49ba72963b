"""Instances in COCO's format: each connected region of one class of a semantic mask, or an instance model's.

Without an instance model, a mask's 8-connected components per class stand in for instances (touching objects of
one class merge: semantic masks cannot tell them apart); the instance model (`wsseg.wsss.instance_segmentor`) tells
them apart. Either way each instance becomes a COCO annotation with its mask in COCO's compressed run-length
encoding (RLE), its box `[x, y, width, height]`, its area in pixels and its score; the document loads with
pycocotools.
"""
from __future__ import annotations

import cv2
import numpy as np

from wsseg.classes import IGNORE_INDEX

BACKGROUND = 0


def mask_instances(labels: np.ndarray, min_area: int = 1, class_scores=None) -> list[dict]:
    """COCO annotations (without ids) of every connected region of each foreground class in `labels` (H, W), class
    indices with 0 the background and 255 unlabelled; regions under `min_area` pixels are left out. With
    `class_scores` ((K, H, W) probabilities, or maps by class index), each is scored by its class's mean score."""
    return coco_annotations(connected_components(labels, min_area, class_scores))


def connected_components(labels: np.ndarray, min_area: int = 1, class_scores=None,
                         min_fragment: float = 0.0) -> list[tuple[int, float, np.ndarray]]:
    """(class, score, bool mask) of each 8-connected region of a foreground class of at least `min_area` pixels;
    scored by the mean of `class_scores[class]` over it (1 without scores), 0 under `min_fragment` of the image."""
    found = []
    for class_index in np.unique(labels):
        if class_index in (BACKGROUND, IGNORE_INDEX):
            continue
        count, components, stats, _ = cv2.connectedComponentsWithStats((labels == class_index).astype(np.uint8),
                                                                        connectivity=8)
        for component in range(1, count):  # 0 is everything outside the class
            if stats[component, cv2.CC_STAT_AREA] < min_area:
                continue
            mask = components == component
            small = mask.sum() < min_fragment * mask.size
            score = 1.0 if class_scores is None else float(class_scores[class_index][mask].mean())
            found.append((int(class_index), 0.0 if small else score, mask))
    return found


def coco_annotations(instances) -> list[dict]:
    """COCO annotations (without ids) of (class, score, bool mask) instances."""
    annotations = []
    for class_index, score, mask in instances:
        rows, cols = np.nonzero(mask)
        if not rows.size:
            continue
        x, y = int(cols.min()), int(rows.min())
        annotations.append(dict(category_id=int(class_index), segmentation=encode_rle(mask), area=int(rows.size),
                                bbox=[x, y, int(cols.max()) - x + 1, int(rows.max()) - y + 1],
                                score=round(float(score), 6), iscrowd=0))
    return annotations


def encode_rle(mask: np.ndarray) -> dict:
    """COCO's compressed RLE of a boolean (H, W) mask: {"size": [H, W], "counts": str}.

    Runs are counted down the columns (COCO's column-major order), alternating 0s and 1s from a run of 0s.
    Each count, after the first two less the count two before it, is written 5 bits a character, lowest first,
    bit 0x20 marking that more follow and 48 added (maskApi.c's rleToString).
    """
    pixels = np.asarray(mask, dtype=bool).flatten(order="F")
    changes = np.flatnonzero(np.diff(pixels)) + 1
    bounds = np.concatenate([[0], changes, [pixels.size]])
    counts = np.diff(bounds).tolist()
    if pixels.size and pixels[0]:
        counts.insert(0, 0)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _compress(counts)}


def _compress(counts: list[int]) -> str:
    characters = []
    for index, count in enumerate(counts):
        value = count - counts[index - 2] if index > 2 else count
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5  # arithmetic shift: a negative difference ends at -1
            more = value != -1 if chunk & 0x10 else value != 0
            characters.append(chr((chunk | 0x20 if more else chunk) + 48))
    return "".join(characters)


def coco_document(images: list[dict], annotations: dict[str, list[dict]], class_names: list[str]) -> dict:
    """A COCO instances document: `images` are {"image_id", "file_name", "height", "width"} (wsseg's string ids),
    `annotations` maps those ids to `mask_instances` lists. COCO ids (images, annotations) are numbered from 1."""
    coco_images, coco_annotations = [], []
    for number, image in enumerate(images, start=1):
        coco_images.append(dict(id=number, file_name=image["file_name"], height=image["height"],
                                width=image["width"], wsseg_image_id=image["image_id"]))
        for annotation in annotations.get(image["image_id"], []):
            coco_annotations.append(dict(annotation, id=len(coco_annotations) + 1, image_id=number))
    categories = [dict(id=index, name=name, supercategory="object")
                  for index, name in enumerate(class_names) if index != BACKGROUND]
    return dict(info=dict(description="wsseg predict --instances"),
                images=coco_images, annotations=coco_annotations, categories=categories)
