"""ACoL, Adversarial Complementary Learning (Zhang et al., CVPR'18): a second head learns from what the first
leaves.

Head A maps the shared features to class maps; where A's map of an image's class exceeds δ, the features are
erased (set to zero) before head B sees them, so B must find the class elsewhere on the object. The
localisation map is the element-wise maximum of the two heads' normalised maps (paper, sec. 3.2).
"""
from __future__ import annotations

import torch
from mmseg.registry import MODELS
from torch import nn

from wsseg.wsss.cams.base import max_normalise
from wsseg.wsss.classifiers.cam_classifier import CAMClassifier, multilabel_loss


@MODELS.register_module()
class ACoLClassifier(CAMClassifier):
    def build_heads(self, channels: int, num_classes: int, erase_threshold: float = 0.6) -> None:
        """`erase_threshold` is δ; the paper tries 0.5-0.9 and uses 0.6 on its localisation benchmarks. Each head
        is a bias-free 1×1 classifier on the shared features, as the plain CAM head is: with the paper's 3×3
        convolutions in front (it cuts VGG's later layers away), the classifier trained from scratch on the tuning
        set reached val mAP 0.52 against the plain model's 0.70."""
        self.head_a = nn.Conv2d(channels, num_classes, kernel_size=1, bias=False)
        self.head_b = nn.Conv2d(channels, num_classes, kernel_size=1, bias=False)
        self.erase_threshold = erase_threshold

    def class_layers(self) -> list:
        return [self.head_a, self.head_b]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head_a(features).mean(dim=(2, 3))

    def loss(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(images)
        maps_a = self.head_a(features)
        maps_b = self.head_b(self.erase(features, maps_a.detach(), targets))
        return {"loss_cls_a": multilabel_loss(maps_a.mean(dim=(2, 3)), targets),
                "loss_cls_b": multilabel_loss(maps_b.mean(dim=(2, 3)), targets)}

    def class_activation(self, features: torch.Tensor) -> torch.Tensor:
        """max(A, B) of the normalised maps; without labels, B's input is erased for the classes A finds present
        (the paper erases by the predicted class at test time)."""
        maps_a = self.head_a(features)
        present = (maps_a.mean(dim=(2, 3)) > 0).float()
        maps_b = self.head_b(self.erase(features, maps_a, present))
        return torch.maximum(max_normalise(maps_a.relu()), max_normalise(maps_b.relu()))

    def erase(self, features: torch.Tensor, maps_a: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Features with zeros where A's map of any of `classes` (N, K) exceeds δ of its peak."""
        discriminative = (max_normalise(maps_a.relu()) * (classes > 0)[:, :, None, None]).amax(dim=1)
        return features * (discriminative <= self.erase_threshold)[:, None].to(features.dtype)
