"""Training-batch transforms of the CAM-expanding methods that change what the classifier sees, not its
architecture: Hide-and-Seek and Mixup. Both leave test time alone.
"""
from __future__ import annotations

import torch

# Hide-and-Seek's patch sides at its 224 px input: 0 (no hiding), 16, 32, 44 and 56 px (Singh & Lee, ICCV'17).
HIDE_AND_SEEK_PATCHES_AT_224 = (0, 16, 32, 44, 56)


def hide_patches(images: torch.Tensor, patch: int, probability: float, fill: torch.Tensor) -> torch.Tensor:
    """Hide-and-Seek: each cell of a `patch`-pixel grid over the images is replaced by `fill` (the mean pixel,
    which the model normalises to zero) with `probability`, independently per image; patch 0 hides nothing."""
    if patch <= 0:
        return images
    batch, _, height, width = images.shape
    rows, cols = -(-height // patch), -(-width // patch)
    hidden = torch.rand(batch, 1, rows, cols, device=images.device) < probability
    hidden = hidden.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)[:, :, :height, :width]
    return torch.where(hidden, fill.view(1, 3, 1, 1).to(images), images)


def hide_and_seek_patch(crop_size: int, patch_fractions: list[float]) -> int:
    """A patch side for this batch, drawn from the fractions of the crop (the paper draws one per batch)."""
    fraction = patch_fractions[int(torch.randint(len(patch_fractions), ()))]
    return round(fraction * crop_size)


def mixup(images: torch.Tensor, targets: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al., ICLR'18): λx₁ + (1 − λ)x₂ with soft labels λy₁ + (1 − λ)y₂, λ ~ Beta(α, α), each
    image paired with another of the batch."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(len(images), device=images.device)
    return lam * images + (1 - lam) * images[partner], lam * targets + (1 - lam) * targets[partner]


class BatchAugment:
    """The batch transforms a classifier config switches on, Hide-and-Seek then Mixup; `fill` is the mean pixel."""

    def __init__(self, settings: dict, fill):
        self.hide_and_seek, self.mixup = settings["hide_and_seek"], settings["mixup"]
        self.crop_size = settings["crop_size"]
        self.fill = torch.as_tensor(fill, dtype=torch.float32)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hide_and_seek["enabled"]:
            patch = hide_and_seek_patch(self.crop_size, self.hide_and_seek["patch_fractions"])
            images = hide_patches(images, patch, self.hide_and_seek["hide_probability"], self.fill)
        if self.mixup["enabled"]:
            images, targets = mixup(images, targets, self.mixup["alpha"])
        return images, targets
