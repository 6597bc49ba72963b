"""Test-time augmentation for mining: maps summed over scales and horizontal flips at image resolution.

PSA and IRN sum the CAMs of scales {1.0, 0.5, 1.5, 2.0} and their flips before normalising: small scales see
whole objects, large ones their parts, and the sum covers more of each object than any one scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wsseg.wsss.cams.base import CAMMethod, max_normalise, upsample


def multiscale_maps(method: CAMMethod, images: torch.Tensor, targets: torch.Tensor, scales: list[float],
                    flip: bool, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, L, *size) maps in [0, 1] for (N, 3, H, W) images, each with its peak at 1 (or all zero); `size`
    defaults to the images' own."""
    size = size or tuple(images.shape[-2:])
    total = torch.zeros(*targets.shape, *size, device=images.device)
    for scale in scales:
        scaled = images if scale == 1 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                         align_corners=False)
        if flip:
            # The flipped copies ride in the same batch; their maps are flipped back and summed before upsampling,
            # which is linear and mirror-symmetric: one upsampling to image size instead of two, a sixth of the
            # mining time at VOC size on a CPU.
            maps = method.rectified_maps(torch.cat([scaled, scaled.flip(-1)]), targets.repeat(2, 1))
            unflipped, flipped = maps.chunk(2)
            total += upsample(unflipped + flipped.flip(-1), size)
        else:
            total += method.upsampled_maps(scaled, targets, size)
    return max_normalise(total)
