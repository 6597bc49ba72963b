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
    itself: CAM_c = Σ_d w_{c,d} F_d and s_c = mean_i CAM_c(i) (METHODS.md §1, CAM).

    `images` are (N, 3, H, W) float RGB in 0..255; the model normalises them itself, so callers need not know
    the statistics. `pretrained` is a backbone checkpoint loaded by `init_weights`.
    """

    def __init__(self, backbone: dict, num_classes: int, pretrained: str | None = None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, init_cfg=None):
        super().__init__(init_cfg)
        self.backbone = MODELS.build(backbone)
        self.pretrained = pretrained
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.classifier = nn.Conv2d(self._feature_channels(), num_classes, kernel_size=1, bias=False)

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

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """F: the last backbone stage, (N, D, h, w)."""
        return self.backbone((images - self.mean) / self.std)[-1]

    def class_activation(self, features: torch.Tensor) -> torch.Tensor:
        """Σ_d w_{c,d} F_d for every class, (N, K, h, w), before any ReLU."""
        return self.classifier(features)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits s_c = Σ_d w_{c,d} mean_i F_d(i), (N, K); pooling first is cheaper than pooling the CAM."""
        return self.classifier(F.adaptive_avg_pool2d(features, 1)).flatten(1)

    def _feature_channels(self) -> int:
        """D, found by a probe forward so that any mmseg backbone works without naming its width."""
        was_training = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            channels = self.backbone(torch.zeros(1, 3, 64, 64))[-1].shape[1]
        self.backbone.train(was_training)
        return channels
