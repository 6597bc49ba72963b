"""A data transform of the segmenter's training input, registered with mmseg's TRANSFORMS so that configs name it."""
from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from wsseg.classes import IGNORE_INDEX


@TRANSFORMS.register_module()
class UncertainAsBackground(BaseTransform):
    """Relabel a pseudo mask's uncertain pixels (the ignore value) as background, after `LoadAnnotations` and before
    any crop pads with the ignore value, so that padding stays ignored.

    The masks' uncertain band lies mostly over background (around the objects, where the CRF and the CAM disagree),
    so ignoring it leaves the segmenter no background label next to objects and it spills past their edges. IRN's
    final segmentation labels have no ignore band either (Ahn et al., CVPR'19: the random walk's argmax labels every
    pixel)."""

    def transform(self, results: dict) -> dict:
        mask = results["gt_seg_map"]
        results["gt_seg_map"] = np.where(mask == IGNORE_INDEX, 0, mask).astype(mask.dtype)
        return results
