"""Grad-CAM (Selvaraju et al., ICCV'17): α_{c,d} = mean_i ∂s_c/∂F_d(i), map_c = Σ_d α_{c,d} F_d."""
from __future__ import annotations

import torch

from wsseg.wsss.cams.base import NO_TARGET, CAMMethod


class GradCAM(CAMMethod):
    def class_maps(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        features = self.model.features(images).detach().requires_grad_()
        with torch.enable_grad():
            scores = self.model.classify(features)
            maps = [self._slot_maps(scores, features, slot) for slot in targets.T]
        return torch.stack(maps, dim=1)

    @staticmethod
    def _slot_maps(scores: torch.Tensor, features: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        # One backward per label slot rather than per class: images do not interact in eval mode, so the gradient
        # of Σ_n s_{n, slot_n} with respect to F_n is ∂s_{n, slot_n}/∂F_n for every image at once.
        chosen = scores.gather(1, slot.clamp(min=0)[:, None]).squeeze(1) * (slot != NO_TARGET)
        (gradients,) = torch.autograd.grad(chosen.sum(), features, retain_graph=True)
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        return (weights * features).sum(dim=1).detach()
