"""The uncertain band learns from the image's labels: `segmenter.mode: band`.

Refine leaves 255 where its two CRF passes disagree, and cross-entropy ignores those pixels. Where a CAM fires on
the small part that tells two classes with one body apart, the body falls in the band, and nothing in training
says what it is not: a segmenter learns the body from the images where another class of that body labelled it,
and predicts that class on this one. The image's labels do say what a band pixel is not. Its class is the
background or one of the labels, so the band adds the partial-label loss -log sum_{c in {0} ∪ y} p_c (Cour et al.,
JMLR'11: a candidate set per example), which pushes down every class the image does not show and leaves the
choice among the candidates to the network. No pixel label is read. On VOC's ground truth 255 marks object
borders, and the loss holds there too. A random crop keeps the whole image's labels: they still hold every class
in view.
"""
from __future__ import annotations

import torch
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import add_prefix

from wsseg.classes import IGNORE_INDEX
from wsseg.segmenter.dataset import labelled_classes


def band_loss(logits: torch.Tensor, masks: torch.Tensor, candidates: torch.Tensor,
              in_image: torch.Tensor) -> torch.Tensor:
    """sum over band pixels of -log sum_{c candidate} p_c, divided by the pixels of the images.

    logits: (B, C, H, W); masks: (B, H, W) class indices, IGNORE_INDEX on the band; candidates: (B, C) bool, each
    image's background and labels; in_image: (B, H, W) bool, False on the batch's padding. A band pixel weighs
    what a labelled one does in a mean over the image, so the term grows with the band's share of it.
    """
    band = (masks == IGNORE_INDEX) & in_image
    # The band's pixels alone, (N, C): most of a batch is labelled, and the loss costs what its pixels do.
    scores = logits.float().permute(0, 2, 3, 1)[band]
    pixel_candidates = candidates[band.nonzero(as_tuple=True)[0]]
    excluded = torch.finfo(scores.dtype).min
    candidate_mass = scores.masked_fill(~pixel_candidates, excluded).logsumexp(1) - scores.logsumexp(1)
    return -candidate_mass.sum() / in_image.sum().clamp(min=1)


@MODELS.register_module()
class BandSegmentor(EncoderDecoder):
    """EncoderDecoder whose decode head adds `band_loss` to its cross-entropy on the masks' labelled pixels. The
    auxiliary head keeps cross-entropy alone; prediction is EncoderDecoder's."""

    def loss(self, inputs: torch.Tensor, data_samples: list) -> dict:
        features = self.extract_feat(inputs)
        logits = self.decode_head(features)
        losses = add_prefix(self.decode_head.loss_by_feat(logits, data_samples), "decode")
        masks = torch.stack([sample.gt_sem_seg.data[0] for sample in data_samples]).long()
        upsampled = resize(logits, masks.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        losses["decode.loss_band"] = band_loss(
            upsampled, masks, self._candidates(data_samples, logits.device), pixels_in_image(data_samples, masks))
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(features, data_samples))
        return losses

    def _candidates(self, data_samples: list, device: torch.device) -> torch.Tensor:
        candidates = labelled_classes(data_samples, self.num_classes, device)
        candidates[:, 0] = True
        return candidates


def pixels_in_image(data_samples: list, masks: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: the pixels of each image, not the padding the batch adds below and right of it (which
    mmseg's data preprocessor also labels 255)."""
    inside = torch.zeros(masks.shape, dtype=torch.bool, device=masks.device)
    for image, sample in zip(inside, data_samples, strict=True):
        height, width = sample.metainfo["img_shape"]
        image[:height, :width] = True
    return inside
