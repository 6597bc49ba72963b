"""SEAM, Self-supervised Equivariant Attention Mechanism (Wang et al., CVPR'20).

A siamese pass over an image x and its rescaled copy A(x): CAMs should be equivariant, A(ŷ(x)) = ŷ(A(x)) (the ER
loss), and a pixel correlation module (PCM) refines each CAM with feature affinities,
y_i = Σ_j ReLU(cos(θ(F_i), θ(F_j))) ŷ_j / Σ_k ReLU(cos(θ(F_i), θ(F_k))), held to the other branch's raw CAM
(the ECR loss). Mining reads the PCM's maps. Follows the authors' code where the paper is silent: the PCM sees
detached features and winner-take-all CAMs, so ECR trains the PCM and ER trains the backbone; ECR compares
with the other branch's strongest class per pixel and averages the hardest 20 % of entries. The code's
min-pooling loss on the PCM maps is left out (its comment: it "does not affect the highest performance").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import nn

from wsseg.errors import ConfigError
from wsseg.wsss.cams.base import max_normalise
from wsseg.wsss.classifiers.cam_classifier import CAMClassifier, multilabel_loss, stage_channels

# The share of (class, pixel) entries whose error the ECR loss averages (the authors' code: 0.2).
ECR_HARDEST_SHARE = 0.2


@MODELS.register_module()
class SEAMClassifier(CAMClassifier):
    """The backbone must output its last two stages (`out_indices` of two stages): the PCM's affinities come
    from both, with the downscaled image, as in the paper."""

    def build_heads(self, channels: int, num_classes: int, transform_scale: float = 0.3,
                    affinity_channels: int = 64) -> None:
        """`transform_scale` is A's rescaling, 0.3 in the paper for 448 px crops; small crops need a milder one,
        or A(x)'s feature map shrinks to a few cells."""
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1, bias=False)
        self.transform_scale = transform_scale
        stages = self._stage_channels()
        self.stage_projections = nn.ModuleList(nn.Conv2d(width, affinity_channels, 1, bias=False)
                                               for width in stages)
        self.affinity_embedding = nn.Conv2d(3 + affinity_channels * len(stages), affinity_channels, 1, bias=False)

    def loss(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        transformed = F.interpolate(images, scale_factor=self.transform_scale, mode="bilinear", align_corners=False)
        logits_o, cam_o, refined_o = self._branch(images, targets)
        logits_t, cam_t, refined_t = self._branch(transformed, targets)
        size = cam_t.shape[-2:]
        cam_o, refined_o = (F.interpolate(maps, size, mode="bilinear", align_corners=False)
                            for maps in (cam_o, refined_o))
        return {
            "loss_cls": (multilabel_loss(logits_o, targets) + multilabel_loss(logits_t, targets)) / 2,
            "loss_er": equivariance_loss(cam_o, cam_t),
            "loss_ecr": hardest_share_l1(refined_o, keep_strongest(cam_t.detach()))
            + hardest_share_l1(refined_t, keep_strongest(cam_o.detach())),
        }

    def localization_maps(self, images: torch.Tensor) -> torch.Tensor:
        stages = self.backbone((images - self.mean) / self.std)
        cams = self.class_activation(stages[-1])
        present = torch.ones(cams.shape[:2], device=cams.device)
        return self.pixel_correlation(with_background(max_normalise(cams.relu()), present), images, stages)[:, 1:]

    def pixel_correlation(self, maps: torch.Tensor, images: torch.Tensor, stages) -> torch.Tensor:
        """PCM: each pixel's maps replaced by the affinity-weighted mean of all pixels' winner-take-all maps."""
        batch, channels, height, width = maps.shape
        small_image = F.interpolate(images / 255.0, (height, width), mode="bilinear", align_corners=False)
        projected = [F.relu(projection(stage.detach())) for projection, stage in zip(self.stage_projections,
                                                                                    stages, strict=True)]
        embedding = self.affinity_embedding(torch.cat([small_image, *projected], dim=1)).flatten(2)
        embedding = embedding / (embedding.norm(dim=1, keepdim=True) + 1e-5)
        affinity = F.relu(embedding.transpose(1, 2) @ embedding)             # (N, hw, hw), cosines ≥ 0
        affinity = affinity / (affinity.sum(dim=1, keepdim=True) + 1e-5)
        strongest = torch.cat([maps[:, :1], keep_strongest(maps[:, 1:])], dim=1).detach()
        return (strongest.flatten(2) @ affinity).view(batch, channels, height, width)

    def _branch(self, images: torch.Tensor, targets: torch.Tensor):
        stages = self.backbone((images - self.mean) / self.std)
        cams = self.class_activation(stages[-1])
        logits = cams.mean(dim=(2, 3))
        normalised = with_background(max_normalise(cams.relu()), targets)
        refined = max_normalise(self.pixel_correlation(normalised, images, stages))
        return logits, normalised, refined * (normalised.amax(dim=(2, 3), keepdim=True) > 0)

    def _stage_channels(self) -> list[int]:
        widths = stage_channels(self.backbone)
        if len(widths) < 2:
            raise ConfigError("SEAMClassifier needs the backbone's last two stages: set classifier.model.backbone."
                              "out_indices to two stages, e.g. [2, 3]")
        return widths[-2:]


def with_background(maps: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(N, 1 + K, h, w): background 1 − max_c ŷ_c ahead of the maps of the `present` (N, K) classes."""
    maps = maps * present[:, :, None, None]
    return torch.cat([1 - maps.amax(dim=1, keepdim=True), maps], dim=1)


def keep_strongest(maps: torch.Tensor) -> torch.Tensor:
    """Each pixel's maps zeroed but for the strongest channel (the authors' `max_onehot`)."""
    return maps * (maps >= maps.amax(dim=1, keepdim=True))


def equivariance_loss(transformed_of_original: torch.Tensor, of_transformed: torch.Tensor) -> torch.Tensor:
    """L_ER = ‖A(ŷ(x)) − ŷ(A(x))‖₁ over the foreground maps (paper, eq. 3)."""
    return (transformed_of_original[:, 1:] - of_transformed[:, 1:]).abs().mean()


def hardest_share_l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of the largest ECR_HARDEST_SHARE of |prediction − target| per image (paper, eq. 6, as coded)."""
    errors = (prediction - target).abs().flatten(1)
    count = max(1, int(errors.shape[1] * ECR_HARDEST_SHARE))
    return errors.topk(count, dim=1).values.mean()
