"""CAM (Zhou et al., CVPR'16): the classifier's weights applied to the features, CAM_c = Σ_d w_{c,d} F_d, or
whatever localisation maps a CAM-expanding classifier makes of them (`localization_maps`)."""
from __future__ import annotations

import torch

from wsseg.wsss.cams.base import CAMMethod, select_targets


class CAM(CAMMethod):
    def class_maps(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return select_targets(self.model.localization_maps(images), targets)
