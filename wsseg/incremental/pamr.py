"""Pixel-adaptive mask refinement, PAMR (Araslanov & Roth, "Single-stage semantic segmentation from image labels",
CVPR'20, sec. 3.2), as WILSON's code refines its localizer's masks before it learns from them.

Each pixel i looks at its 8 neighbours j at each of several dilations. Their affinity is a softmax over those
neighbours of κ_ij = -mean over colour channels of |I_i - I_j| / (ε + 0.1 σ_i), σ_i the standard deviation of the
channel over i's 3x3 windows at all the dilations: a neighbour of a colour close to i's, against the contrast around
i, weighs most, one across an edge next to nothing. Each iteration replaces every pixel's class distribution by its
neighbours' average under those weights, so that a mask spreads inside a region of one colour and stops at its edges.

κ is unchanged by a per-channel affine change of the colours (|I_i - I_j| and σ_i scale alike, and offsets cancel),
so an image normalised by the data preprocessor's mean and std gives the same refinement as its pixels.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# PAMR's iterations and dilations in WILSON's code (its train.py), on the localizer's grid.
PAMR_ITERATIONS = 10
PAMR_DILATIONS = (1, 2, 4, 8, 12)
# The affinity's temperature, against the local contrast σ_i, and ε, which keeps a flat window's κ at 0 (PAMR's).
CONTRAST_SCALE = 0.1
EPSILON = 1e-8


@torch.no_grad()
def refine_with_pamr(image: torch.Tensor, masks: torch.Tensor, iterations: int = PAMR_ITERATIONS,
                     dilations: Sequence[int] = PAMR_DILATIONS) -> torch.Tensor:
    """`masks` (B, C, H, W), a distribution over classes at each pixel, refined along the colours of `image`
    (B, K, H, W, on the masks' grid): (B, C, H, W), still a distribution over classes at each pixel."""
    weights = pixel_affinities(image, dilations)
    for _ in range(iterations):
        masks = (_neighbours(masks, dilations) * weights).sum(2)
    return masks


def pixel_affinities(image: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """(B, 1, 8·len(dilations), H, W): each pixel's weights over its neighbours, summing to 1."""
    neighbours = _neighbours(image, dilations)
    centres = image.unsqueeze(2).expand(-1, -1, len(dilations), -1, -1)
    contrast = torch.cat([centres, neighbours], 2).std(2, keepdim=True)
    kappa = -(neighbours - image.unsqueeze(2)).abs() / (EPSILON + CONTRAST_SCALE * contrast)
    return kappa.mean(1, keepdim=True).softmax(2)


def _neighbours(tensor: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """(B, K, 8·len(dilations), H, W): the values of each pixel's 8 neighbours at each dilation, the border
    replicated outwards."""
    height, width = tensor.shape[-2:]
    shifted = []
    for dilation in dilations:
        padded = F.pad(tensor, [dilation] * 4, mode="replicate")
        shifted += [padded[..., dilation + dy:dilation + dy + height, dilation + dx:dilation + dx + width]
                    for dy in (-dilation, 0, dilation) for dx in (-dilation, 0, dilation) if dy or dx]
    return torch.stack(shifted, 2)
