"""The train pass's scores of a wsss run: the CAMs' confusion counts at every threshold of the sweep, and the pseudo
masks' (uncertain pixels as background, and left out), kept as counts so that shards' scores add up."""
from __future__ import annotations

import numpy as np

from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.evaluation.metrics import ConfusionMatrix
from wsseg.wsss.pseudo_masks import CamThresholdSweep


class TrainScores:
    """Confusion matrices of the train pass: one per CAM threshold, two for the pseudo masks."""

    def __init__(self, num_classes: int, thresholds: list[float], with_pseudo_masks: bool):
        self.thresholds = list(thresholds)
        self.cam = [ConfusionMatrix(num_classes) for _ in self.thresholds]
        self.with_pseudo_masks = with_pseudo_masks
        self.pseudo_as_background = ConfusionMatrix(num_classes)
        self.pseudo_confident = ConfusionMatrix(num_classes)
        self.relabelled = ConfusionMatrix(num_classes)
        self.uncertain_pixels = self.pseudo_pixels = 0

    def add(self, ground_truth, cams, labels, pseudo_mask, relabelled=None) -> None:
        sweep = CamThresholdSweep(cams, labels)
        for threshold, matrix in zip(self.thresholds, self.cam, strict=True):
            matrix.update(sweep.at(threshold), ground_truth)
        if pseudo_mask is None:
            return
        uncertain = pseudo_mask == IGNORE_INDEX
        as_background = np.where(uncertain, 0, pseudo_mask)
        self.pseudo_as_background.update(as_background, ground_truth)
        self.pseudo_confident.update(as_background, np.where(uncertain, IGNORE_INDEX, ground_truth))
        self.uncertain_pixels += int(uncertain.sum())
        self.pseudo_pixels += uncertain.size
        if relabelled is not None:
            self.relabelled.update(np.where(relabelled == IGNORE_INDEX, 0, relabelled), ground_truth)

    def to_json(self) -> dict:
        """The counts, which add up over shards (`merged`)."""
        return {"thresholds": self.thresholds, "with_pseudo_masks": self.with_pseudo_masks,
                "cam": [matrix.counts.tolist() for matrix in self.cam],
                "pseudo_as_background": self.pseudo_as_background.counts.tolist(),
                "pseudo_confident": self.pseudo_confident.counts.tolist(),
                "relabelled": self.relabelled.counts.tolist(),
                "uncertain_pixels": self.uncertain_pixels, "pseudo_pixels": self.pseudo_pixels}

    @classmethod
    def from_json(cls, data: dict) -> TrainScores:
        scores = cls(len(data["pseudo_as_background"]), data["thresholds"], data["with_pseudo_masks"])
        for matrix, counts in zip(scores.cam, data["cam"], strict=True):
            matrix.counts = np.asarray(counts, np.int64)
        for name in ("pseudo_as_background", "pseudo_confident", "relabelled"):
            getattr(scores, name).counts = np.asarray(data[name], np.int64)
        scores.uncertain_pixels, scores.pseudo_pixels = data["uncertain_pixels"], data["pseudo_pixels"]
        return scores

    @classmethod
    def merged(cls, parts: list[TrainScores]) -> TrainScores:
        total = cls(parts[0].pseudo_as_background.num_classes, parts[0].thresholds, parts[0].with_pseudo_masks)
        for part in parts:
            for matrix, counts in zip(total.cam, part.cam, strict=True):
                matrix.counts += counts.counts
            for name in ("pseudo_as_background", "pseudo_confident", "relabelled"):
                getattr(total, name).counts += getattr(part, name).counts
            total.uncertain_pixels += part.uncertain_pixels
            total.pseudo_pixels += part.pseudo_pixels
        return total

    def best_cam_threshold(self) -> int | None:
        """The index of the threshold whose CAMs score best (the lowest one on a tie), None before any score."""
        mious = [matrix.miou() for matrix in self.cam]
        return int(np.nanargmax(mious)) if any(np.isfinite(mious)) else None

    def cam_metrics(self, names) -> dict | None:
        """The sweep, and per-class figures at the best threshold."""
        best = self.best_cam_threshold()
        if best is None:
            return None
        return {"best_threshold": self.thresholds[best],
                "threshold_sweep": [{"threshold": t, "miou": m.summary(names)["miou"]}
                                    for t, m in zip(self.thresholds, self.cam, strict=True)],
                "at_best_threshold": self.cam[best].summary(names)}

    def pseudo_mask_metrics(self, names) -> dict | None:
        if not (self.with_pseudo_masks and self.pseudo_pixels):
            return None
        return {"uncertain_as_background": self.pseudo_as_background.summary(names),
                "confident_only": self.pseudo_confident.summary(names),
                "uncertain_fraction": round(self.uncertain_pixels / self.pseudo_pixels, 4),
                "relabelled": self.relabelled.summary(names) if self.relabelled.counts.any() else None}

    def confusion_matrices(self, names) -> dict:
        """The counts of the CAMs at their best threshold and of the pseudo masks (uncertain as background), where
        scored."""
        matrices, best = {}, self.best_cam_threshold()
        if best is not None:
            matrices["cam"] = self.cam[best].record(names)
        if self.with_pseudo_masks and self.pseudo_pixels:
            matrices["pseudo_masks"] = self.pseudo_as_background.record(names)
        return matrices

    def metrics(self, classes: ClassList, segmenter: dict | None, upper_bound, counts: dict) -> dict:
        cam, masks = self.cam_metrics(classes.names), self.pseudo_mask_metrics(classes.names)
        headline = {
            "cam_miou": _field(cam, "at_best_threshold", "miou"),
            "cam_best_threshold": _field(cam, "best_threshold"),
            "pseudo_mask_miou": _field(masks, "uncertain_as_background", "miou"),
            "pseudo_mask_confident_miou": _field(masks, "confident_only", "miou"),
            "uncertain_fraction": _field(masks, "uncertain_fraction"),
            "relabelled_mask_miou": _field(masks, "relabelled", "miou"),
            "segmenter_miou": _field(segmenter, "miou"),
        }
        return {"headline": headline, "cam": cam, "pseudo_masks": masks, "segmenter": segmenter,
                "upper_bound_miou": upper_bound, "counts": counts}


def _field(section: dict | None, *keys: str):
    for key in keys:
        if section is None:
            return None
        section = section[key]
    return section
