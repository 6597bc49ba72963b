"""The mechanics every CAM method shares; a method only says how features become per-class maps.

As in pytorch-grad-cam, the base class owns the forward pass, target selection, ReLU, upsampling and
max-normalisation, and each method (`CAM`, `GradCAM`, …) overrides `class_maps`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Target slots holding this value are padding: an image with fewer labels than the batch's widest.
NO_TARGET = -1


class CAMMethod:
    """Localisation maps of a `CAMClassifier` for chosen classes.

    `targets` is a (N, L) long tensor of logit indices (foreground class index − 1), one row per image, padded
    with `NO_TARGET`; every result is (N, L, H, W) with zero maps in padded slots.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Maps at the input's size, each divided by its maximum so the peak is 1."""
        return max_normalise(self.upsampled_maps(images, targets))

    def upsampled_maps(self, images: torch.Tensor, targets: torch.Tensor,
                       size: tuple[int, int] | None = None) -> torch.Tensor:
        """ReLU'd maps, bilinearly upsampled to `size` (default: the input's), not normalised, so that maps from
        several scales and flips can be summed before normalising (as PSA and IRN do)."""
        return upsample(self.rectified_maps(images, targets), size or images.shape[-2:])

    def rectified_maps(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """ReLU'd maps at the features' resolution, zero in padded slots."""
        maps = F.relu(self.class_maps(images, targets).float())
        return maps * (targets != NO_TARGET)[:, :, None, None]

    def class_maps(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, L, h, w) maps before ReLU, at the resolution of the classifier's features."""
        raise NotImplementedError


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def max_normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each (H, W) map divided by its own maximum; all-zero maps stay zero."""
    peaks = maps.amax(dim=(-2, -1), keepdim=True)
    return maps / peaks.clamp(min=torch.finfo(maps.dtype).tiny)


def select_targets(per_class: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rows of a (N, K, h, w) per-class tensor picked by (N, L) targets; padded slots get class 0's row."""
    index = targets.clamp(min=0)[:, :, None, None].expand(-1, -1, *per_class.shape[-2:])
    return per_class.gather(1, index)
