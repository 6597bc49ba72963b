"""AdvCAM (Lee et al., CVPR'21): anti-adversarial climbing. The image is pushed, step by step, to raise its
class's score; regions that did not count before start to, and the maps of every step are summed.

x_t = x_{t-1} + ξ ∇L / max|∇L|, L = y_c − Σ_{k≠c} y_k − λ ‖M ⊙ |A_t − A_0|‖₁ (paper, eq. 5 and 7): lowering the
other classes' logits keeps the climb from painting them in, and the mask M of pixels that any step so far lifted
above τ of its map's peak keeps the already strong regions from growing without bound.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wsseg.wsss.cams.base import NO_TARGET, CAMMethod, max_normalise, select_targets

# The paper's settings (sec. 4.1): 27 steps of size 0.08 in normalised-image units, λ = 7, τ = 0.5.
STEPS = 27
STEP_SIZE = 0.08
RESTRICTION = 7.0
RESTRICTED_ABOVE = 0.5


class AdvCAM(CAMMethod):
    def __init__(self, model: torch.nn.Module, steps: int = STEPS, step_size: float = STEP_SIZE,
                 restriction: float = RESTRICTION, restricted_above: float = RESTRICTED_ABOVE):
        super().__init__(model)
        self.steps, self.step_size = steps, step_size
        self.restriction, self.restricted_above = restriction, restricted_above

    def rectified_maps(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._slot_maps(images, slot) for slot in targets.T], dim=1)

    def _slot_maps(self, images: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """(N, h, w) climbed maps of one label slot, zero where it is padding. Only the images that hold a label
        in the slot climb: a climb costs 27 forward and backward passes, and most images have fewer labels than
        their batch's widest."""
        labelled = slot != NO_TARGET
        climbed = self._climbed_maps(images[labelled], slot[labelled])
        maps = climbed.new_zeros(len(slot), *climbed.shape[1:])
        maps[labelled] = climbed
        return maps

    def _climbed_maps(self, images: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """(N, h, w): the sum over the climb's steps of each image's map of its class in `slot` (no padding)."""
        target = slot[:, None]
        # The model takes pixels in 0..255 and normalises them itself; the paper's step is in normalised units.
        step_size = self.step_size * getattr(self.model, "std", torch.ones(1, device=images.device))
        climbed, total = images.detach(), 0.0
        for step in range(self.steps + 1):
            climbed = climbed.detach().requires_grad_()
            with torch.enable_grad():
                per_class = self.model.localization_maps(climbed).float()
                chosen = F.relu(select_targets(per_class, target)[:, 0])
                total = total + chosen.detach()
                lifted = max_normalise(chosen.detach()) > self.restricted_above
                if step == 0:
                    initial, restricted = chosen.detach(), lifted
                else:
                    restricted = restricted | lifted
                if step == self.steps:
                    break
                # The logits are the maps' means, as a CAM classifier's are (pooling and the 1×1 head commute).
                logits = per_class.mean(dim=(2, 3))
                own = logits.gather(1, target)[:, 0]
                objective = (2 * own - logits.sum(1)
                             - self.restriction * (restricted * (chosen - initial).abs()).sum(dim=(1, 2)))
                (gradient,) = torch.autograd.grad(objective.sum(), climbed)
            peak = gradient.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12)
            climbed = (climbed + step_size * gradient / peak).clamp(0.0, 255.0)
        return total
