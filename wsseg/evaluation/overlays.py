"""Overlays of segmenters on images with masks: image | each model's prediction | ground truth, side by side.

The evaluate step shows a run without CAMs (the supervised upper bound, the semi branches) this way, and the
incremental update the current version beside its candidate. A few images are predicted again rather than kept
from scoring, which streams through the split.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wsseg.errors import DataError
from wsseg.evaluation.report import Overlay, colorize, overlay_strip
from wsseg.evaluation.scoring import predict_mask, read_ground_truth


def segmenter_overlays(samples, models: list[tuple[str, object]], settings: dict, count: int,
                       ground_truth_of: Callable[[np.ndarray], np.ndarray] | None = None) -> list[Overlay]:
    """Strips of the first `count` readable samples with masks: the image, each model's prediction (`models`: its
    panel title and the loaded model) with the test-time augmentation of the `evaluate` section `settings`, and
    the ground truth (through `ground_truth_of` where given)."""
    from wsseg.data import read_image

    overlays = []
    for sample in (sample for sample in samples if sample.mask_path is not None):
        if len(overlays) == count:
            break
        try:
            ground_truth, image = read_ground_truth(sample), read_image(sample.image_path)
        except DataError:
            continue  # scoring counts the unreadable images; an overlay just takes the next one
        if ground_truth_of is not None:
            ground_truth = ground_truth_of(ground_truth)
        predictions = [(title, colorize(predict_mask(model, image, settings))) for title, model in models]
        panels = [("image", image), *predictions, ("ground truth", colorize(ground_truth))]
        overlays.append(Overlay(sample.image_id, tuple(title for title, _ in panels),
                                overlay_strip([panel for _, panel in panels])))
    return overlays


def store_overlays(out, overlays: list[Overlay]) -> None:
    """Each strip as `overlays/<image_id>.png` in the store `out`, beside the report that shows it."""
    for overlay in overlays:
        out.put_bytes(f"overlays/{overlay.image_id}.png", overlay.png)
