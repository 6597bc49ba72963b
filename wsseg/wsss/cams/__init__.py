"""CAM methods as a small family sharing one mining loop; `CAM_METHODS` maps config names to classes."""
from wsseg.wsss.cams.adv_cam import AdvCAM
from wsseg.wsss.cams.base import NO_TARGET, CAMMethod, max_normalise
from wsseg.wsss.cams.cam import CAM
from wsseg.wsss.cams.grad_cam import GradCAM

CAM_METHODS: dict[str, type[CAMMethod]] = {"cam": CAM, "gradcam": GradCAM, "advcam": AdvCAM}

__all__ = ["CAM", "AdvCAM", "CAM_METHODS", "NO_TARGET", "CAMMethod", "GradCAM", "max_normalise"]
