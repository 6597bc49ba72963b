"""Instance masks of one image, and the files that hold them: VOC's SegmentationObject format beside a JSON list.

`<image_id>.png` is a palette PNG of instance numbers (0 background, k the k-th instance, 255 unassigned: the
pseudo masks' uncertain band, or what no instance took); `<image_id>.json` holds each instance's class and score,
`{"classes": [...], "scores": [...]}`, in the order of their numbers. The PNG is written last, so an image whose
PNG is stored is done.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from wsseg.store import ArtifactStore
from wsseg.wsss.pseudo_masks import decode_mask_png, encode_mask_png

# Instance numbers are one byte, as VOC's: 255 is unassigned, 0 the background.
MAX_INSTANCES = 254


@dataclass(frozen=True)
class Instances:
    ids: np.ndarray                 # (H, W) uint8 instance numbers
    classes: tuple[int, ...]        # class index of instance k at position k - 1
    scores: tuple[float, ...]       # its confidence, the ranking average precision reads

    def masks(self) -> Iterator[tuple[int, float, np.ndarray]]:
        """(class, score, (H, W) bool mask) of each instance."""
        for number, (class_index, score) in enumerate(zip(self.classes, self.scores, strict=True), start=1):
            yield class_index, score, self.ids == number

    @classmethod
    def from_masks(cls, found: list[tuple[float, int, np.ndarray]], unassigned: np.ndarray) -> Instances:
        """Instances from (score, class, mask) triples (disjoint masks), numbered by falling score; pixels of
        `unassigned` (bool) and of the instances past `MAX_INSTANCES` are 255, the rest 0."""
        ranked = sorted(found, key=lambda instance: -instance[0])
        ids = np.where(unassigned, 255, 0).astype(np.uint8)
        for _, _, mask in ranked[MAX_INSTANCES:]:
            ids[mask] = 255
        for number, (_, _, mask) in enumerate(ranked[:MAX_INSTANCES], start=1):
            ids[mask] = number
        kept = ranked[:MAX_INSTANCES]
        return cls(ids, tuple(int(c) for _, c, _ in kept), tuple(round(float(s), 6) for s, _, _ in kept))


def write_instances(store: ArtifactStore, image_id: str, instances: Instances) -> None:
    store.put_bytes(f"{image_id}.json", json.dumps({"classes": list(instances.classes),
                                                    "scores": list(instances.scores)}).encode())
    store.put_bytes(f"{image_id}.png", encode_mask_png(instances.ids))


def read_instances(store: ArtifactStore, image_id: str) -> Instances:
    """The instances stored for `image_id`; ValueError when the files are malformed or disagree."""
    ids = decode_mask_png(store.get_bytes(f"{image_id}.png"))
    try:
        listed = json.loads(store.get_bytes(f"{image_id}.json"))
        classes, scores = tuple(listed["classes"]), tuple(listed["scores"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{image_id}.json is no instance list with classes and scores: {error}") from None
    numbers = set(np.unique(ids).tolist()) - {0, 255}
    if len(classes) != len(scores) or (numbers and max(numbers) > len(classes)):
        raise ValueError(f"{image_id}: the PNG numbers instances up to {max(numbers, default=0)}, the JSON lists "
                         f"{len(classes)} classes and {len(scores)} scores")
    return Instances(ids, classes, scores)


def stored_ids(store: ArtifactStore) -> set[str]:
    """The images whose instances are stored (their PNG, written last, is there)."""
    return {key[:-4] for key in store.list() if key.endswith(".png") and "/" not in key}
