"""Modules registered in mmseg's `MODELS` registry; importing this package registers them."""
from wsseg.wsss.classifiers.acol_classifier import ACoLClassifier
from wsseg.wsss.classifiers.affinity_net import AffinityNet
from wsseg.wsss.classifiers.cam_classifier import CAMClassifier
from wsseg.wsss.classifiers.inter_pixel_relations import InterPixelRelationNet, InterPixelRelations
from wsseg.wsss.classifiers.mdc_classifier import MDCClassifier
from wsseg.wsss.classifiers.seam_classifier import SEAMClassifier

__all__ = ["ACoLClassifier", "AffinityNet", "CAMClassifier", "InterPixelRelationNet", "InterPixelRelations",
           "MDCClassifier", "SEAMClassifier"]
