"""SEC, Seed, Expand and Constrain (Kolesnikov & Lampert, ECCV'16; docs/METHODS.md §1.16), as an mmseg segmentor.

`SECSegmentor` is mmseg's EncoderDecoder trained with SEC's three losses on its decode head's scores instead of
cross-entropy; prediction is EncoderDecoder's own. The pseudo masks play SEC's localisation cues: every pixel a
mask labels (background included) is a seed of its class, 255 is no seed. The expand loss needs each image's
labels (`IMAGE_LABELS` in its data sample's metainfo, packed by `configs.sec_train_pipeline`). The expand and
constrain losses work on the decode head's grid, as SEC's do on its 41x41 output; the seed loss on the scores
upsampled to the mask, as mmseg's decode heads score their masks, so that no seed is lost to downsampling.
The auxiliary head keeps its cross-entropy on the pseudo masks: averaged over labelled pixels, that is a seed
loss again, and it gives the backbone trained from scratch a deeper gradient, as in mmseg's DeepLabV3+.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS

from wsseg.classes import IGNORE_INDEX
from wsseg.segmenter.dataset import labelled_classes
from wsseg.wsss.crf import CrfParams, crf_marginals

# SEC's code adds min_prob = 1e-4 to every probability and renormalises, the network's and the CRF's alike, so
# that no log in the three losses is infinite and no gradient is cut.
MIN_PROBABILITY = 1e-4


def floored(probabilities: torch.Tensor) -> torch.Tensor:
    """Probabilities over dim 1 moved off 0 by MIN_PROBABILITY, still summing to 1."""
    return (probabilities + MIN_PROBABILITY) / (1 + probabilities.shape[1] * MIN_PROBABILITY)


def seed_loss(probabilities: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """-(1/sum_c |S_c|) sum_c sum_{i in S_c} log f_{i,c}, per image, averaged over the batch.

    probabilities: (B, C, H, W); seeds: (B, H, W) class indices, IGNORE_INDEX where a pixel is no seed.
    """
    is_seed = seeds != IGNORE_INDEX
    seed_probabilities = probabilities.gather(1, seeds.where(is_seed, 0).unsqueeze(1)).squeeze(1)
    per_image = -(seed_probabilities.log() * is_seed).sum((1, 2)) / is_seed.sum((1, 2)).clamp(min=1)
    return per_image.mean()


def scaled_decay(decay: float, pixels: int, reference_pixels: int) -> float:
    """The per-pixel decay on a grid of `pixels` that weighs pixels as `decay` does on `reference_pixels`.

    The j-th ranked pixel's weight d^(j-1) falls to 1/e after 1/(1-d) pixels: 250 of SEC's 41x41 = 1681 for
    d = 0.996 (15% of the image), 1000 (60%) for the background's 0.999. d^(reference/pixels) keeps that a share
    of the image, not a count of pixels, on any grid: an image upsampled by pixel replication pools to the same
    G_c, and 0 (max pooling) and 1 (the mean) stay what they are.
    """
    return decay ** (reference_pixels / pixels)


def global_weighted_rank_pooling(scores: torch.Tensor, decays: torch.Tensor) -> torch.Tensor:
    """G = sum_j d^(j-1) s_(j) / sum_j d^(j-1) over the last dim of `scores`, ranked from high to low.

    scores: (..., N); decays: (...), one d per pooled row. d = 0 is max pooling, d = 1 the mean.
    """
    ranked = scores.sort(dim=-1, descending=True).values
    ranks = torch.arange(scores.shape[-1], device=scores.device, dtype=scores.dtype)
    weights = decays.to(scores).unsqueeze(-1) ** ranks
    return (ranked * weights).sum(-1) / weights.sum(-1)


def expand_loss(probabilities: torch.Tensor, present: torch.Tensor, decays: torch.Tensor) -> torch.Tensor:
    """-mean_{c in y} log G_c - mean_{c not in y} log(1 - G_c) - log G_background, averaged over the batch.

    probabilities: (B, C, H, W), class 0 the background; present: (B, C) bool, the image labels y (column 0,
    the background, is not read); decays: (B, C), each class's d for each image.
    """
    pooled = global_weighted_rank_pooling(probabilities.flatten(2), decays)
    foreground, labelled = pooled[:, 1:], present[:, 1:]
    unlabelled = ~labelled
    present_term = -(foreground.log() * labelled).sum(1) / labelled.sum(1).clamp(min=1)
    absent_term = -((1 - foreground).log() * unlabelled).sum(1) / unlabelled.sum(1).clamp(min=1)
    return (present_term + absent_term - pooled[:, 0].log()).mean()


def constrain_loss(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over pixels (and the batch) of KL(Q_i || f_i); both (B, C, H, W), `targets` the CRF's Q."""
    return (targets * (targets.log() - probabilities.log())).sum(1).mean()


def crf_targets(images: np.ndarray, probabilities: torch.Tensor, params: CrfParams) -> torch.Tensor:
    """Q: the dense CRF's marginals for `probabilities` (B, C, H, W) on `images` (B, H, W, 3) uint8 RGB.

    Q is a target: SEC passes no gradient through the CRF.
    """
    scores = probabilities.detach().float().cpu().numpy()
    marginals = np.stack([crf_marginals(image, score, params) for image, score in zip(images, scores, strict=True)])
    return floored(torch.from_numpy(marginals).to(probabilities))


@MODELS.register_module()
class SECSegmentor(EncoderDecoder):
    """EncoderDecoder trained with SEC's seed, expand and constrain losses.

    decay_present / decay_absent / decay_background: SEC's d for classes in the image's labels, the others and
    the background, meant for a grid of `decay_reference_pixels` (`scaled_decay` adapts them to the decode
    head's). crf: `wsseg.wsss.crf.CrfParams` fields of the constrain loss's CRF, run on the decode head's grid.
    """

    def __init__(self, decay_present: float, decay_absent: float, decay_background: float,
                 decay_reference_pixels: int, crf: dict, **kwargs):
        super().__init__(**kwargs)
        self.decays = dict(present=decay_present, absent=decay_absent, background=decay_background)
        self.decay_reference_pixels = decay_reference_pixels
        self.crf_params = CrfParams.from_config(crf)

    def loss(self, inputs: torch.Tensor, data_samples: list) -> dict:
        features = self.extract_feat(inputs)
        # float32 losses: under bf16 autocast, a log of a probability near the floor would lose its precision.
        logits = self.decode_head(features).float()
        seeds = torch.stack([sample.gt_sem_seg.data[0] for sample in data_samples]).long()
        upsampled = F.interpolate(logits, seeds.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        probabilities = floored(logits.softmax(1))
        present = labelled_classes(data_samples, self.num_classes, logits.device)
        images = self._images_at(inputs, logits.shape[-2:])
        losses = dict(
            loss_seed=seed_loss(floored(upsampled.softmax(1)), seeds),
            loss_expand=expand_loss(probabilities, present, self._class_decays(present, logits[0, 0].numel())),
            loss_constrain=constrain_loss(probabilities, crf_targets(images, probabilities, self.crf_params)))
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(features, data_samples))
        return losses

    def _class_decays(self, present: torch.Tensor, pixels: int) -> torch.Tensor:
        decay = {name: scaled_decay(value, pixels, self.decay_reference_pixels)
                 for name, value in self.decays.items()}
        decays = torch.where(present, decay["present"], decay["absent"])
        decays[:, 0] = decay["background"]
        return decays

    def _images_at(self, inputs: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """(B, h, w, 3) uint8 RGB: the batch's images, denormalised, area-averaged down to `size`."""
        preprocessor = self.data_preprocessor
        images = inputs.float() * preprocessor.std + preprocessor.mean
        images = F.interpolate(images, size, mode="area")
        return images.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
