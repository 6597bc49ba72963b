"""Modules registered in mmseg's `MODELS` registry; importing this package registers them."""
from wsseg.models.cam_classifier import CAMClassifier

__all__ = ["CAMClassifier"]
