"""Instance segmentation scored by VOC's protocol: average precision per class at mask IoU thresholds, and its mean.

Implemented here rather than with pycocotools, whose COCO protocol differs (101-point interpolation, at most 100
detections an image, area ranges, crowd regions). The protocol is VOC's as IRN scored it (chainercv's
`eval_instance_segmentation_voc`):

- The ground truth is VOC's SegmentationObject PNG (instance numbers, 0 background, 255 void), each instance's
  class read off SegmentationClass under it.
- Per image and class, predictions are taken by falling score; each is matched to the ground-truth instance it
  overlaps most (mask IoU), a true positive when that IoU reaches the threshold and the instance is not taken
  yet, else a false positive (a second detection of one object is one too).
- Per class, over all images, predictions are ranked by score; precision and recall are read down the ranking, and
  AP is the area under the precision envelope (all points, VOC 2010 on). mAP is the mean over the classes that
  have a ground-truth instance.

Departs from chainercv in one point: IoU leaves out VOC's void (255) pixels, which its protocols do not score
(they mark object borders and unlabelled slivers), so a mask is not penalised for covering its object's border.
"""
from __future__ import annotations

import numpy as np

from wsseg.classes import IGNORE_INDEX

IOU_THRESHOLDS = (0.5, 0.7)


class InstanceAveragePrecision:
    """Matches accumulated over images; `summary` gives AP per class and mAP at each of `IOU_THRESHOLDS`."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.scores = [[] for _ in range(num_classes)]
        self.matched = {threshold: [[] for _ in range(num_classes)] for threshold in IOU_THRESHOLDS}
        self.positives = np.zeros(num_classes, np.int64)

    def add(self, predicted: list[tuple[int, float, np.ndarray]], truth: list[tuple[int, np.ndarray]],
            void: np.ndarray) -> None:
        """One image: `predicted` (class, score, bool mask) and `truth` (class, bool mask) instances; `void` (bool)
        marks the pixels left out of every IoU."""
        scored = ~void
        for class_index in {c for c, _ in truth} | {c for c, _, _ in predicted}:
            objects = [mask[scored] for c, mask in truth if c == class_index]
            detections = sorted(((score, mask[scored]) for c, score, mask in predicted if c == class_index),
                                key=lambda detection: -detection[0])
            self.positives[class_index] += len(objects)
            ious = mask_ious([mask for _, mask in detections], objects)
            self.scores[class_index] += [score for score, _ in detections]
            for threshold in IOU_THRESHOLDS:
                self.matched[threshold][class_index] += greedy_matches(ious, threshold)

    def summary(self, names: list[str]) -> dict:
        """`map50`, `map70` (percent; None without any ground-truth instance) and per class AP and counts."""
        per_class = {}
        for class_index in range(1, self.num_classes):
            if not self.positives[class_index] and not self.scores[class_index]:
                continue
            figures = {f"ap{round(100 * t)}": _percent(self._average_precision(class_index, t))
                       for t in IOU_THRESHOLDS}
            per_class[names[class_index]] = dict(figures, instances=int(self.positives[class_index]),
                                                 predictions=len(self.scores[class_index]))
        means = {f"map{round(100 * t)}": _mean([row[f"ap{round(100 * t)}"] for row in per_class.values()])
                 for t in IOU_THRESHOLDS}
        return dict(means, per_class=per_class, instances=int(self.positives.sum()),
                    predictions=sum(map(len, self.scores)))

    def _average_precision(self, class_index: int, threshold: float) -> float | None:
        if not self.positives[class_index]:
            return None
        order = np.argsort(-np.asarray(self.scores[class_index]), kind="stable")
        hits = np.asarray(self.matched[threshold][class_index], bool)[order]
        return average_precision(hits, int(self.positives[class_index]))


def mask_ious(predicted: list[np.ndarray], truth: list[np.ndarray]) -> np.ndarray:
    """(P, T) IoU of flat bool masks."""
    if not predicted or not truth:
        return np.zeros((len(predicted), len(truth)))
    first, second = np.stack(predicted).astype(np.float32), np.stack(truth).astype(np.float32)
    intersection = first @ second.T
    union = first.sum(1)[:, None] + second.sum(1)[None, :] - intersection
    return intersection / np.maximum(union, 1)


def greedy_matches(ious: np.ndarray, threshold: float) -> list[bool]:
    """Whether each prediction (rows, by falling score) is a true positive: its best-overlapping instance reaches
    `threshold` and was not taken by a higher-scored prediction."""
    taken, hits = set(), []
    for row in ious:
        best = int(row.argmax()) if row.size else -1
        hit = best >= 0 and row[best] >= threshold and best not in taken
        if best >= 0 and row[best] >= threshold:
            taken.add(best)
        hits.append(bool(hit))
    return hits


def average_precision(hits: np.ndarray, positives: int) -> float:
    """Area under the precision envelope of a ranking whose true positives are `hits`, out of `positives`."""
    if not hits.size:
        return 0.0
    true = np.cumsum(hits)
    precision = true / np.arange(1, len(hits) + 1)
    recall = true / positives
    precision = np.concatenate([[0.0], precision, [0.0]])
    recall = np.concatenate([[0.0], recall, [recall[-1]]])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def ground_truth_instances(objects: np.ndarray, classes: np.ndarray) -> tuple[list[tuple[int, np.ndarray]],
                                                                                np.ndarray]:
    """VOC's instances: (class, bool mask) of each number in a SegmentationObject map, its class the most common
    one under it in SegmentationClass, and the void pixels (255 in either map)."""
    void = (objects == IGNORE_INDEX) | (classes == IGNORE_INDEX)
    instances = []
    for number in np.unique(objects):
        if number in (0, IGNORE_INDEX):
            continue
        mask = objects == number
        under = classes[mask & ~void]
        if under.size:
            instances.append((int(np.bincount(under).argmax()), mask))
    return instances, void


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def _mean(values: list) -> float | None:
    known = [value for value in values if value is not None]
    return round(float(np.mean(known)), 2) if known else None
