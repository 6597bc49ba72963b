"""The instance model: a trained segmenter with IRN's displacement and boundary heads on its features
(docs/METHODS.md §1.20).

IRN trains a Mask R-CNN on its pseudo labels; here the heads IRNet grew on the classifier grow on the segmenter
instead, and learn from the instance pseudo labels the same relations, one level finer: pairs of one instance
belong together (their displacements converge on one centroid), pairs of two instances, of one class or two, lie
across a boundary. The segmenter stays frozen, so its semantic predictions are the ones the pipeline scores, and
an instance is a part of its mask: `segmenter_instances` groups the predicted mask's pixels with the heads' field
and boundaries as the pseudo labels were grouped (`wsseg.wsss.instance_grouping`), the class probabilities
seeding the walk where CAMs seeded it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS

from wsseg.wsss.classifiers.inter_pixel_relations import InterPixelRelations, labels_on_grid, relation_losses
from wsseg.wsss.instance_grouping import group_instances
from wsseg.wsss.instance_labels import Instances


@MODELS.register_module()
class InstanceSegmentor(EncoderDecoder):
    """EncoderDecoder, frozen, with `InterPixelRelations` (built from `relations`) over its feature levels.
    Prediction is EncoderDecoder's; `relations` gives the heads' boundary logits and displacement field."""

    def __init__(self, relations: dict, **segmenter):
        super().__init__(**segmenter)
        self.requires_grad_(False)
        self.relations_head = InterPixelRelations(self._feature_widths(), **relations)

    def train(self, mode: bool = True):
        super().train(mode)
        for child in self.children():
            if child is not self.relations_head:
                child.eval()  # the segmenter's batch statistics stay as it was trained
        return self

    def relations(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, h, w) boundary logits and (N, 2, h, w) displacements for (N, 3, H, W) RGB images in 0..255."""
        with torch.no_grad():
            features = self.extract_feat(self._normalised(images))
        return self.relations_head(list(features))

    def relation_loss(self, images: torch.Tensor, labels: torch.Tensor, radius: int) -> dict[str, torch.Tensor]:
        """IRN's losses (`relation_losses`) for (N, H, W) instance numbers (0 background, 255 unknown)."""
        boundary, displacement = self.relations(images)
        return relation_losses(boundary, displacement, labels_on_grid(labels, boundary.shape[-2:]), radius)

    def _normalised(self, images: torch.Tensor) -> torch.Tensor:
        """RGB images as the segmenter's data preprocessor hands them on (it converts BGR input to RGB where
        `bgr_to_rgb`, so RGB is what the network saw; otherwise BGR)."""
        preprocessor = self.data_preprocessor
        channels = images if preprocessor.channel_conversion else images[:, [2, 1, 0]]
        return (channels - preprocessor.mean) / preprocessor.std if preprocessor._enable_normalize else channels

    def _feature_widths(self) -> list[int]:
        """The widths of the feature levels, by a probe forward (before the heads exist: EncoderDecoder's modes)."""
        was_training = self.training
        EncoderDecoder.train(self, False)
        with torch.no_grad():
            features = self.extract_feat(torch.zeros(1, 3, 64, 64))
        EncoderDecoder.train(self, was_training)
        return [feature.shape[1] for feature in features]


@torch.no_grad()
def segmenter_instances(model: InstanceSegmentor, image: np.ndarray, probabilities: torch.Tensor,
                        settings: dict) -> Instances:
    """The instances of an (H, W, 3) RGB image whose (K, H, W) class probabilities (the segmenter's, with the
    test-time views the semantic figures use) give the mask; each scored by its class's mean probability over it,
    fragments under `min_fragment` of the image 0 (`instance_score`). `settings`: the `instances.grouping` section."""
    from wsseg.segmenter.inference import prediction_scale

    probabilities = probabilities / probabilities.sum(dim=0, keepdim=True).clamp(min=1e-6)
    mask = probabilities.argmax(dim=0).numpy().astype(np.uint8)
    labels = [int(label) for label in np.unique(mask) if label != 0]
    if not labels:
        return Instances(mask, (), ())
    height, width = image.shape[:2]
    scale = prediction_scale(model, height, width)
    tensor = torch.tensor(image).permute(2, 0, 1)[None].float().to(next(model.parameters()).device)
    tensor = F.interpolate(tensor, (max(1, round(height * scale)), max(1, round(width * scale))), mode="bilinear",
                           antialias=True)
    boundary, displacement = model.relations(torch.cat([tensor, tensor.flip(-1)]))
    boundary = torch.sigmoid(boundary.float()).cpu()
    boundary = (boundary[0, 0] + boundary[1, 0].flip(-1)) / 2
    scores = F.interpolate(probabilities[labels][None], tuple(boundary.shape), mode="bilinear",
                           align_corners=False)[0]
    grouped = group_instances(scores, labels, mask, displacement[0].float().cpu(), boundary, settings)
    found = [(instance_score(probabilities[class_index].numpy(), instance, settings["min_fragment"]), class_index,
              instance) for class_index, _, instance in grouped.masks()]
    return Instances.from_masks(found, unassigned=grouped.ids == 255)


def instance_score(class_scores: np.ndarray, mask: np.ndarray, min_fragment: float) -> float:
    """An instance's confidence: the mean of its class's score map over it, 0 for a fragment under `min_fragment`
    of the image (IRN drops those to the bottom of the ranking)."""
    if mask.sum() < min_fragment * mask.size:
        return 0.0
    return float(class_scores[mask].mean())
