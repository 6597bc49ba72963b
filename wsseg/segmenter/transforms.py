"""Data transforms of the segmenter's training input, registered with mmseg's TRANSFORMS so that configs name them."""
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


@TRANSFORMS.register_module()
class CheckMask(BaseTransform):
    """Raise `DataError` naming the mask unless it covers its image and holds only class indices (the data info's
    `num_classes`) or the ignore value: right after `LoadAnnotations`, before a resize would stretch a mask of
    another size over the image without a word. `WssegDataset` skips the image on that error."""

    def transform(self, results: dict) -> dict:
        from wsseg.segmenter.dataset import check_mask

        check_mask(results["gt_seg_map"], results["img"].shape[:2], results["num_classes"], results["seg_map_path"])
        return results
