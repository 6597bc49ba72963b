"""Modules registered in mmseg's `MODELS` registry; importing this package registers them."""
from wsseg.models.acol_classifier import ACoLClassifier
from wsseg.models.affinity_net import AffinityNet
from wsseg.models.cam_classifier import CAMClassifier
from wsseg.models.mdc_classifier import MDCClassifier
from wsseg.models.seam_classifier import SEAMClassifier

__all__ = ["ACoLClassifier", "AffinityNet", "CAMClassifier", "MDCClassifier", "SEAMClassifier"]
