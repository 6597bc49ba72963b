"""A multi-label image classifier whose head makes class activation maps (CAM, Zhou et al. CVPR'16) exact."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS
from torch import nn

from wsseg.errors import ConfigError

# ImageNet statistics, the normalisation every mmseg backbone config uses.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@MODELS.register_module()
class CAMClassifier(BaseModule):
    """Backbone → 1×1 convolution without bias → global average pooling → one logit per foreground class.

    Because pooling and a bias-free linear layer commute, the 1×1 convolution applied before pooling is the CAM
    itself: CAM_c = Σ_d w_{c,d} F_d and s_c = mean_i CAM_c(i) (docs/METHODS.md §1.1).

    `images` are (N, 3, H, W) float RGB in 0..255; the model normalises them itself, so callers need not know
    the statistics. `pretrained` is a backbone checkpoint loaded by `init_weights`.
    """

    def __init__(self, backbone: dict, num_classes: int, pretrained: str | None = None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, init_cfg=None, **head_options):
        super().__init__(init_cfg)
        self.backbone = MODELS.build(backbone)
        self.pretrained = pretrained
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.build_heads(stage_channels(self.backbone)[-1], num_classes, **head_options)

    def build_heads(self, channels: int, num_classes: int) -> None:
        """The layers after the backbone; subclasses (the CAM-expanding methods) build theirs from the options
        their config adds."""
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1, bias=False)

    def init_weights(self) -> None:
        # mmengine logs each parameter's initialiser at INFO, hundreds of lines per model; keep its warnings only.
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            super().init_weights()
        finally:
            logger.setLevel(level)
        if self.pretrained:
            try:
                load_checkpoint(self.backbone, self.pretrained, map_location="cpu", strict=False,
                                revise_keys=[(r"^module\.", ""), (r"^backbone\.", "")])
            except FileNotFoundError:
                raise ConfigError(f"classifier.model.pretrained: no checkpoint at {self.pretrained}") from None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(images))

    def loss(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training losses, mmseg-style, by name; `targets` are (N, K) multi-hot (soft under Mixup)."""
        return {"loss_cls": multilabel_loss(self(images), targets)}

    def localization_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) maps before any ReLU, the ones CAM mining reads; methods that refine the plain CAM
        (ACoL's fused heads, MDC's dilated branches, SEAM's pixel correlation) override this or
        `class_activation`."""
        return self.class_activation(self.features(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """F: the last backbone stage, (N, D, h, w)."""
        return self.backbone((images - self.mean) / self.std)[-1]

    def class_activation(self, features: torch.Tensor) -> torch.Tensor:
        """Σ_d w_{c,d} F_d for every class, (N, K, h, w), before any ReLU."""
        return self.classifier(features)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits s_c = Σ_d w_{c,d} mean_i F_d(i), (N, K); pooling first is cheaper than pooling the CAM."""
        return self.classifier(F.adaptive_avg_pool2d(features, 1)).flatten(1)

    def class_layers(self) -> list[nn.Module]:
        """The layers that map features to class maps, which IRN trains at 10× the backbone's rate."""
        return [self.classifier]


def stage_channels(backbone: nn.Module) -> list[int]:
    """The widths of a backbone's output stages, found by a probe forward, so that any mmseg backbone works
    without naming them."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        stages = backbone(torch.zeros(1, 3, 64, 64))
    backbone.train(was_training)
    return [stage.shape[1] for stage in stages]


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The multi-label soft-margin loss of PSA and IRN (BCE averaged over classes), in float32 under autocast."""
    return F.multilabel_soft_margin_loss(logits.float(), targets.float())
