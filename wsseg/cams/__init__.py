"""CAM methods as a small family sharing one mining loop; `CAM_METHODS` maps config names to classes."""
from wsseg.cams.base import NO_TARGET, CAMMethod, max_normalise
from wsseg.cams.cam import CAM
from wsseg.cams.grad_cam import GradCAM

CAM_METHODS: dict[str, type[CAMMethod]] = {"cam": CAM, "gradcam": GradCAM}

__all__ = ["CAM", "CAM_METHODS", "NO_TARGET", "CAMMethod", "GradCAM", "max_normalise"]
