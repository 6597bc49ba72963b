"""Semantic-segmentation metrics from a confusion matrix accumulated over images."""
from __future__ import annotations

import numpy as np

from wsseg.classes import IGNORE_INDEX


class ConfusionMatrix:
    """Counts (ground truth, prediction) pixel pairs; memory is num_classes², whatever the number of images.

    Row = ground-truth class, column = predicted class. Pixels whose ground truth is the ignore index are
    skipped; a prediction outside 0..num_classes-1 is an error, not a silent miss.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, ground_truth: np.ndarray) -> None:
        if prediction.shape != ground_truth.shape:
            raise ValueError(f"prediction shape {prediction.shape} differs from ground truth {ground_truth.shape}")
        gt = ground_truth.reshape(-1).astype(np.int64)
        pred = prediction.reshape(-1).astype(np.int64)
        kept = gt != self.ignore_index
        gt, pred = gt[kept], pred[kept]
        for name, values in (("ground truth", gt), ("prediction", pred)):
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                raise ValueError(f"{name} holds values outside 0..{self.num_classes - 1} "
                                 f"(and {self.ignore_index} = ignore): {np.unique(values).tolist()}")
        self.counts += np.bincount(gt * self.num_classes + pred,
                                   minlength=self.num_classes ** 2).reshape(self.num_classes, self.num_classes)

    @property
    def _true_positives(self) -> np.ndarray:
        return np.diag(self.counts).astype(np.float64)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both ground truth and prediction."""
        union = self.counts.sum(0) + self.counts.sum(1) - np.diag(self.counts)
        return _divide(self._true_positives, union)

    def precision(self) -> np.ndarray:
        return _divide(self._true_positives, self.counts.sum(0))

    def recall(self) -> np.ndarray:
        return _divide(self._true_positives, self.counts.sum(1))

    def pixel_accuracy(self) -> float:
        total = self.counts.sum()
        return float(self._true_positives.sum() / total) if total else float("nan")

    def miou(self) -> float:
        """Mean IoU over the classes that occur (NaN classes are left out, as mmseg and VOC devkit do)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def record(self, class_names: tuple[str, ...] | list[str]) -> dict:
        """The counts as JSON, so that a report (or a later reader) can draw the matrix without the images."""
        return {"classes": list(class_names), "rows": "ground truth", "columns": "prediction",
                "counts": self.counts.tolist()}

    def summary(self, class_names: tuple[str, ...] | list[str]) -> dict:
        """Percentages, rounded for reports; NaN becomes None so the dict is valid JSON."""
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        per_class = {
            name: {"iou": _percent(iou), "precision": _percent(p), "recall": _percent(r)}
            for name, iou, p, r in zip(class_names, self.iou(), self.precision(), self.recall(), strict=True)
        }
        return {"miou": _percent(self.miou()), "pixel_accuracy": _percent(self.pixel_accuracy()),
                "per_class": per_class}


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def _percent(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value) * 100, 2)


def unseen_as_background(ground_truth: np.ndarray, num_seen: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """The ground truth of an incremental step's evaluation (MiB's protocol, Cermelli et al., CVPR'20): a class the
    model has not been taught yet (index >= `num_seen`) counts as background, the ignore index stays."""
    unseen = (ground_truth >= num_seen) & (ground_truth != ignore_index)
    return np.where(unseen, 0, ground_truth).astype(ground_truth.dtype)


def incremental_mious(matrix: ConfusionMatrix, num_old: int) -> dict:
    """`old_miou` over the background and the first `num_old` foreground classes, `new_miou` over the classes after
    them, `all_miou` over all, in percent. The background counts as old: the old model knew it, and a step that
    forgets old objects or over-claims new ones shows it there too."""
    iou = matrix.iou()
    return {"old_miou": _percent(_nanmean(iou[:1 + num_old])), "new_miou": _percent(_nanmean(iou[1 + num_old:])),
            "all_miou": _percent(matrix.miou())}


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
