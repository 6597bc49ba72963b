"""Where a CAM stops being its object: the background levels of the two CRF passes, chosen per run.

A CAM max-normalised per image mixes two populations, object pixels (high) and background pixels (low); how
high "high" is depends on the dataset, the classifier and the method, so no constant carries over (a threshold
fitted to one synthetic set lost 12 points on another). Otsu's method (IEEE SMC'79) splits each class's
histogram of CAM values, pooled over the images labelled with the class, where the two populations are best
separated: that is the confident-foreground pass's threshold. Split again, the values below it part into true
background and the CAM's tail around its objects: that is the confident-background pass's threshold, and the
tail becomes the uncertain band. Neither reads a pixel label. A user who has a few pixel-labelled images can
name them (`crf.calibration`); the thresholds are then scaled to fit those images best.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

HISTOGRAM_BINS = 256
# Where a step that writes CAM files keeps their histograms (`CamHistograms.to_json`), beside them.
CAM_STATISTICS = "cam_statistics.json"
# Scales of the adaptive thresholds that calibration tries: half to twice, in even steps of the logarithm.
CALIBRATION_SCALES = tuple(round(float(scale), 3) for scale in np.geomspace(0.5, 2.0, 9))
# Scales the stability scan labels at: neighbours 13 % apart, from 0.6 to twice Otsu's cut.
STABILITY_SCALES = tuple(round(float(scale), 3) for scale in np.geomspace(0.6, 2.0, 11))


@dataclass(frozen=True)
class PassLevels:
    """Per-class thresholds of the confident-foreground and confident-background passes, and where they came
    from (`source`, said in the report)."""

    foreground: dict[int, float]
    background: dict[int, float]
    source: str
    details: dict = field(default_factory=dict)

    def scaled(self, scale: float) -> PassLevels:
        return PassLevels({label: level * scale for label, level in self.foreground.items()},
                          {label: level * scale for label, level in self.background.items()}, self.source,
                          self.details)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PassLevels:
        return cls({int(k): v for k, v in data["foreground"].items()},
                   {int(k): v for k, v in data["background"].items()}, data["source"], data.get("details", {}))


class CamHistograms:
    """Per-class histograms of CAM values in [0, 1] over the images labelled with each class.

    Counts add up: the histograms of a run's CAMs are the sum of its shards' (`merged`), whatever the shards, so
    a step that writes CAMs keeps them per shard (`to_json`) and its merge sums them into `CAM_STATISTICS`; the
    thresholds then come from those sums without reading a CAM again."""

    def __init__(self, num_classes: int):
        self.counts = np.zeros((num_classes, HISTOGRAM_BINS), np.int64)
        self.images = 0

    def add(self, cams: np.ndarray, labels: np.ndarray) -> None:
        for cam, label in zip(cams, labels, strict=True):
            self.counts[label] += np.histogram(cam, HISTOGRAM_BINS, (0.0, 1.0))[0]
        self.images += 1

    def to_json(self) -> dict:
        return {"images": self.images, "bins": HISTOGRAM_BINS, "counts": self.counts.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> CamHistograms:
        counts = np.asarray(data["counts"], np.int64)
        histograms = cls(len(counts))
        histograms.counts, histograms.images = counts, data["images"]
        return histograms

    @classmethod
    def merged(cls, parts: list[CamHistograms]) -> CamHistograms:
        total = cls(len(parts[0].counts))
        for part in parts:
            total.counts += part.counts
            total.images += part.images
        return total

    def otsu(self) -> dict[int, float]:
        """Otsu's threshold of every class with any CAM value counted."""
        return {int(label): otsu_threshold(counts) for label, counts in enumerate(self.counts) if counts.sum()}

    def levels(self) -> PassLevels:
        """The adaptive pass levels: each class's Otsu threshold, and the Otsu threshold of the values below it."""
        foreground, background = {}, {}
        for label, counts in enumerate(self.counts):
            if counts.sum():
                foreground[label] = otsu_threshold(counts)
                below = counts[:round(foreground[label] * HISTOGRAM_BINS)]
                background[label] = otsu_threshold(below) * len(below) / HISTOGRAM_BINS if below.sum() else 0.0
        return PassLevels(foreground, background, "cams",
                          {"method": "Otsu per class, pooled over the images labelled with it"})


def most_stable_scale(labellings, scales: tuple[float, ...] = STABILITY_SCALES) -> tuple[float, list[float]]:
    """The scale, between two neighbouring `scales`, at which the edges of the label maps `labellings(scale)` move
    least (the geometric mean of the pair), and how far they move between each pair (`edge_shift`)."""
    maps = [labellings(scale) for scale in scales]
    shifts = [edge_shift(lower, upper) for lower, upper in zip(maps, maps[1:], strict=False)]
    best = int(np.argmin(shifts))
    return float(np.sqrt(scales[best] * scales[best + 1])), [round(shift, 4) for shift in shifts]


def edge_shift(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    """How far, in pixels, the edges between labels move from the maps `first` to `second`: the pixels that
    change per edge pixel, averaged over the maps. A share of changed pixels would favour high thresholds for their
    smaller objects alone, whose shorter edges change fewer pixels for the same move."""
    return float(np.mean([np.count_nonzero(a != b) / max(1.0, (edge_length(a) + edge_length(b)) / 2)
                          for a, b in zip(first, second, strict=True)]))


def edge_length(labels: np.ndarray) -> int:
    """The neighbouring pixel pairs, across and down, whose labels differ."""
    return int(np.count_nonzero(labels[1:] != labels[:-1]) + np.count_nonzero(labels[:, 1:] != labels[:, :-1]))


def otsu_threshold(counts: np.ndarray) -> float:
    """The value in [0, 1] that maximises the between-class variance of a histogram over [0, 1]."""
    if len(counts) < 2 or counts.sum() == 0:
        return 1.0 if len(counts) else 0.0
    weights = counts / counts.sum()
    centres = (np.arange(len(counts)) + 0.5) / len(counts)
    below = np.cumsum(weights)[:-1]
    below_mass = np.cumsum(weights * centres)[:-1]
    mean = float((weights * centres).sum())
    between = (mean * below - below_mass) ** 2 / np.maximum(below * (1 - below), 1e-12)
    return float((np.argmax(between) + 1) / len(counts))
