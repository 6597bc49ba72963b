"""AffinityNet (Ahn & Kwak, CVPR'18): pixel embeddings whose distances say which pixels belong together.

The affinity of pixels i and j is a_ij = exp(−‖f_i − f_j‖₁ / D) (paper, eq. 5, the L1 distance averaged over
the D channels). It is trained on the confident pixels of the pseudo masks: pairs within a radius that share a
label should have affinity 1, pairs that do not, 0; pairs touching the uncertain band teach nothing. The loss
balances background pairs, foreground pairs and negative pairs (eq. 7-9: 1/4, 1/4, 1/2). A random walk with these
affinities (`wsseg.wsss.random_walk`) then spreads each CAM over the region its peak lies in.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import nn

from wsseg.classes import IGNORE_INDEX
from wsseg.wsss.classifiers.cam_classifier import IMAGENET_MEAN, IMAGENET_STD, stage_channels
from wsseg.wsss.random_walk import pair_offsets, shifted_pairs

# The embedding's stride: the random walk runs on this grid of the working-size image.
EMBEDDING_STRIDE = 4


@MODELS.register_module()
class AffinityNet(BaseModule):
    """Backbone stages (all of them: fine ones for edges, deep ones for what is an object) projected, upsampled to
    stride 4 and fused into a `channels`-dimensional embedding."""

    def __init__(self, backbone: dict, channels: int = 64, mean=IMAGENET_MEAN, std=IMAGENET_STD, init_cfg=None):
        super().__init__(init_cfg)
        self.backbone = MODELS.build({**backbone, "out_indices": [0, 1, 2, 3]})
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        widths = stage_channels(self.backbone)
        self.projections = nn.ModuleList(nn.Sequential(nn.Conv2d(width, channels, 1, bias=False), nn.ReLU())
                                         for width in widths)
        self.fuse = nn.Conv2d(channels * len(widths), channels, 1, bias=False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, channels, H/4, W/4) embeddings of (N, 3, H, W) RGB images in 0..255."""
        stages = self.backbone((images - self.mean) / self.std)
        size = stages[0].shape[-2:]
        projected = [F.interpolate(projection(stage), size, mode="bilinear", align_corners=False)
                     for projection, stage in zip(self.projections, stages, strict=True)]
        return self.fuse(torch.cat(projected, dim=1))

    def loss(self, images: torch.Tensor, labels: torch.Tensor, radius: int) -> dict[str, torch.Tensor]:
        """The balanced affinity loss of (N, H/4, W/4) pixel labels (0 background, 255 uncertain)."""
        return affinity_loss(self.embed(images), labels, radius)



def pair_affinities(embedding: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, O, h, w): a_ij between each pixel i and its neighbour j at each offset of `pair_offsets(radius)`;
    neighbours outside the image get affinity 0."""
    pairs = []
    for offset in pair_offsets(radius):
        first, second, valid = shifted_pairs(embedding, offset)
        pairs.append(torch.exp(-(first - second).abs().mean(dim=1)) * valid)
    return torch.stack(pairs, dim=1)


def affinity_loss(embedding: torch.Tensor, labels: torch.Tensor, radius: int) -> dict[str, torch.Tensor]:
    losses = {"loss_background": [], "loss_foreground": [], "loss_negative": []}
    for offset in pair_offsets(radius):
        first, second, valid = shifted_pairs(embedding, offset)
        label_i, label_j, _ = shifted_pairs(labels[:, None].float(), offset)
        label_i, label_j = label_i[:, 0], label_j[:, 0]
        known = valid.bool() & (label_i != IGNORE_INDEX) & (label_j != IGNORE_INDEX)
        affinity = torch.exp(-(first - second).abs().mean(dim=1)).clamp(1e-5, 1 - 1e-5)
        same = label_i == label_j
        losses["loss_background"].append(-torch.log(affinity[known & same & (label_i == 0)]))
        losses["loss_foreground"].append(-torch.log(affinity[known & same & (label_i > 0)]))
        losses["loss_negative"].append(-torch.log(1 - affinity[known & ~same]))
    weights = {"loss_background": 0.25, "loss_foreground": 0.25, "loss_negative": 0.5}
    return {name: weights[name] * _mean(torch.cat(values)) for name, values in losses.items()}


def _mean(values: torch.Tensor) -> torch.Tensor:
    # An image set without, say, any negative pair in a batch contributes nothing rather than NaN.
    return values.mean() if values.numel() else values.sum()
