"""IRNet (Ahn, Cho & Kwak, CVPR'19): a displacement field and a class-boundary map from a backbone's
multi-level features, learned from inter-pixel relations alone.

`InterPixelRelations` holds the two branches over any backbone's stages (finest first): the boundary branch fuses
every stage at the finest stride into one logit per pixel; the displacement branch fuses the deeper stages at the
second stride, upsamples them and fuses them with the finest one into a 2-vector per pixel, (dy, dx) in cells of the
finest grid, pointing at the pixel's instance centroid. `InterPixelRelationNet` puts them on the CAM classifier's
backbone, which learns with them, from the pseudo masks' relations. IRN freezes its backbone, an ImageNet ResNet-50
that the CAM training fine-tuned; the CPU presets' backbones are small and trained from scratch for classification
alone: fine-tuned, the tuning look's displacement loss fell to 0.23 where the frozen one stayed at 0.58, and the
pseudo labels' mAP@0.5 rose from 74.0 to 74.6 (100 train images).

`relation_losses` are IRN's, weighted as its code weights them: for pairs (i, j) within `radius` whose labels are
known, the affinity a_ij = 1 − max B on the line between them (`boundary_affinities`) should be 1 within a label and
0 across labels; the displacements of a pair within one foreground label differ by their offset,
D(i) − D(j) = x_j − x_i (so that x + D(x) is one point for the whole object), and within the background not at all.
The labels are whatever says which pixels belong together: class pseudo masks (train-irn, as IRN) or instance ids
(the instance heads on the segmenter, `wsseg.wsss.instance_segmentor`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import nn

from wsseg.classes import IGNORE_INDEX
from wsseg.wsss.classifiers.cam_classifier import IMAGENET_MEAN, IMAGENET_STD, stage_channels
from wsseg.wsss.random_walk import boundary_affinities, pair_offsets, shifted_pairs

# IRN's MeanShift: the displacement field's running mean (momentum 0.1, as BatchNorm's) is taken off at inference,
# since the relation losses fix displacements only up to a constant.
MEAN_MOMENTUM = 0.1


@MODELS.register_module()
class InterPixelRelations(BaseModule):
    """IRN's boundary and displacement branches over backbone stages of widths `in_channels` (finest first).
    `forward(stages)` gives (N, 1, h, w) boundary logits and (N, 2, h, w) displacements on the finest stage's grid."""

    def __init__(self, in_channels: list[int], boundary_channels: int = 32, displacement_channels: int = 256,
                 init_cfg=None):
        super().__init__(init_cfg)
        fine, *deep = in_channels
        self.boundary_stages = nn.ModuleList(_projection(width, boundary_channels) for width in in_channels)
        self.boundary = nn.Conv2d(boundary_channels * len(in_channels), 1, 1)
        self.displacement_fine = _projection(fine, displacement_channels // 2)
        self.displacement_stages = nn.ModuleList(_projection(width, displacement_channels) for width in deep)
        self.displacement_deep = _projection(displacement_channels * len(deep), displacement_channels)
        self.displacement = nn.Sequential(
            _projection(displacement_channels // 2 + displacement_channels, displacement_channels),
            nn.Conv2d(displacement_channels, 2, 1, bias=False))
        self.register_buffer("displacement_mean", torch.zeros(2))

    def forward(self, stages: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        fine_size, deep_size = stages[0].shape[-2:], stages[1].shape[-2:]
        boundary = self.boundary(torch.cat([_resized(project(stage), fine_size) for project, stage
                                            in zip(self.boundary_stages, stages, strict=True)], dim=1))
        deep = self.displacement_deep(torch.cat([_resized(project(stage), deep_size) for project, stage
                                                 in zip(self.displacement_stages, stages[1:], strict=True)], dim=1))
        displacement = self.displacement(torch.cat([self.displacement_fine(stages[0]),
                                                    _resized(deep, fine_size)], dim=1))
        if self.training:
            with torch.no_grad():
                batch_mean = displacement.float().mean(dim=(0, 2, 3))
                self.displacement_mean.mul_(1 - MEAN_MOMENTUM).add_(MEAN_MOMENTUM * batch_mean)
            return boundary, displacement
        return boundary, displacement - self.displacement_mean.view(1, 2, 1, 1).to(displacement.dtype)


@MODELS.register_module()
class InterPixelRelationNet(BaseModule):
    """IRNet: `InterPixelRelations` on every stage of a backbone (started from the CAM classifier's by the train-irn
    step). `images` are (N, 3, H, W) RGB in 0..255, normalised here as the classifier normalises them."""

    def __init__(self, backbone: dict, boundary_channels: int = 32, displacement_channels: int = 256,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, init_cfg=None):
        super().__init__(init_cfg)
        self.backbone = MODELS.build({**backbone, "out_indices": [0, 1, 2, 3]})
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.relations = InterPixelRelations(stage_channels(self.backbone), boundary_channels,
                                             displacement_channels)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.relations(list(self.backbone((images - self.mean) / self.std)))

    def loss(self, images: torch.Tensor, labels: torch.Tensor, radius: int) -> dict[str, torch.Tensor]:
        """IRN's losses for (N, H, W) labels at the images' resolution (0 background, 255 unknown)."""
        boundary, displacement = self(images)
        return relation_losses(boundary, displacement, labels_on_grid(labels, boundary.shape[-2:]), radius)


def labels_on_grid(labels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, h, w): the label at the centre of each cell of a grid that divides the (N, H, W) labels evenly."""
    stride_y, stride_x = labels.shape[-2] // grid[0], labels.shape[-1] // grid[1]
    return labels[:, stride_y // 2::stride_y, stride_x // 2::stride_x][:, :grid[0], :grid[1]]


def relation_losses(boundary_logits: torch.Tensor, displacement: torch.Tensor, labels: torch.Tensor,
                    radius: int) -> dict[str, torch.Tensor]:
    """IRN's four losses, weighted so that they sum to its total: (positive + negative affinity) / 2 +
    (foreground + background displacement) / 2. `boundary_logits` (N, 1, h, w), `displacement` (N, 2, h, w),
    `labels` (N, h, w): pairs within `radius` that share a label belong together, 255 is unknown."""
    affinities = boundary_affinities(torch.sigmoid(boundary_logits.float())[:, 0], radius).clamp(1e-5, 1 - 1e-5)
    displacement = displacement.float()
    terms = {name: [] for name in ("background", "foreground", "negative", "displacement_fg", "displacement_bg")}
    for slot, offset in enumerate(pair_offsets(radius)):
        label_i, label_j, valid = shifted_pairs(labels[:, None].float(), offset)
        label_i, label_j = label_i[:, 0], label_j[:, 0]
        known = valid.bool() & (label_i != IGNORE_INDEX) & (label_j != IGNORE_INDEX)
        same = known & (label_i == label_j)
        background, foreground = same & (label_i == 0), same & (label_i > 0)
        affinity = affinities[:, slot]
        terms["background"].append(-torch.log(affinity[background]))
        terms["foreground"].append(-torch.log(affinity[foreground]))
        terms["negative"].append(-torch.log(1 - affinity[known & ~same]))
        here, there, _ = shifted_pairs(displacement, offset)
        difference = (here - there).permute(0, 2, 3, 1)
        expected = torch.tensor(offset, dtype=difference.dtype, device=difference.device)
        terms["displacement_fg"].append((difference[foreground] - expected).abs().mean(dim=1))
        terms["displacement_bg"].append(difference[background].abs().mean(dim=1))
    mean = {name: _mean(torch.cat(values)) for name, values in terms.items()}
    return {"loss_boundary_positive": (mean["background"] + mean["foreground"]) / 4,
            "loss_boundary_negative": mean["negative"] / 2,
            "loss_displacement_foreground": mean["displacement_fg"] / 2,
            "loss_displacement_background": mean["displacement_bg"] / 2}


def _projection(in_channels: int, out_channels: int) -> nn.Sequential:
    """IRN's 1×1 convolution, GroupNorm and ReLU (its groups: 4 of 32 channels, 8 of 64, 16 from 128 on)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.GroupNorm(min(16, max(1, out_channels // 8)), out_channels), nn.ReLU(inplace=True))


def _resized(features: torch.Tensor, size) -> torch.Tensor:
    return features if features.shape[-2:] == size else F.interpolate(features, size, mode="bilinear",
                                                                      align_corners=False)


def _mean(values: torch.Tensor) -> torch.Tensor:
    # A batch without, say, any foreground pair contributes nothing rather than NaN.
    return values.mean() if values.numel() else values.sum()
