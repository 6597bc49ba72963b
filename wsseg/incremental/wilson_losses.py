"""WILSON's formulas on tensors (Cermelli et al., CVPR'22; docs/METHODS.md §2), apart from the modules that use them
(`wsseg.incremental.wilson`): the localizer's image scores (nGWP pooling and the focal size penalty), the decode
head's pseudo label, the localizer's self-training targets and loss of WILSON's code, and the image labels of the
old classes read from the old model."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# The localizer's self-training targets in WILSON's code (its train.py, pseudo_gtmask): a pixel is confidently of a
# class above 0.6 of the class's highest refined score in the image (0.7 for the background), and above 0.2 in any
# case.
CONFIDENT_SHARE = 0.6
CONFIDENT_BACKGROUND_SHARE = 0.7
CONFIDENT_FLOOR = 0.2
# The old model was trained with a BCE per class, so σ > 0.5 is its own decision that a pixel shows the class.
OLD_MODEL_DECISION = 0.5


def ngwp_scores(maps: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Normalised global weighted pooling, y_c = sum_i m_ic z_ic / (ε + sum_i m_ic), m the softmax over classes of
    the maps z (B, C, H, W): (B, C). ε keeps a class that no pixel claims near 0 instead of at its mean score."""
    masks, logits = maps.softmax(1).flatten(2), maps.flatten(2)
    return (masks * logits).sum(-1) / (epsilon + masks.sum(-1))


def focal_size_penalty(maps: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """(1 - s_c)^γ log(λ + s_c), s_c = sum_i m_ic / |I| the share of the image class c claims: (B, C). Strongly
    negative for a class claiming almost nothing, fading as it grows, it makes a present class spread over its
    object (Araslanov & Roth, CVPR'20, whose γ = 3 and λ = 0.01 WILSON keeps)."""
    size = maps.softmax(1).flatten(2).mean(-1)
    return (1 - size) ** gamma * torch.log(lam + size)


def pseudo_labels(maps: torch.Tensor, old_logits: torch.Tensor | None, new_labels: torch.Tensor,
                  alpha: float) -> torch.Tensor:
    """q̂ (B, C, H, W), the decode head's soft targets: the old model's sigmoid scores for the old classes, the
    localizer's α·one-hot(argmax m) + (1 - α)·m for the new ones, and for the background the smaller of the two.

    maps: the localizer's (B, C, H, W); old_logits: the old model's (B, C_old, H, W), background first, or None
    without the old model's prior (fine-tuning), where the localizer's background is kept and the old classes' targets
    are 0; new_labels: (B, C - C_old), 1 for each new class the image is labelled with. m is the softmax over all
    classes, then zeroed outside the background and the image's new classes, as in WILSON's code.
    """
    masks = maps.softmax(1) * shown_classes(new_labels, maps.shape[1])[:, :, None, None]
    hard = F.one_hot(masks.argmax(1), masks.shape[1]).permute(0, 3, 1, 2).to(masks)
    localizer = alpha * hard + (1 - alpha) * masks
    if old_logits is None:
        return localizer
    old_scores = old_logits.sigmoid()
    # The old model knows where old objects are, the localizer where new ones are: a pixel is background only where
    # neither claims it.
    background = torch.minimum(old_scores[:, :1], localizer[:, :1])
    return torch.cat([background, old_scores[:, 1:], localizer[:, old_scores.shape[1]:]], 1)


def shown_classes(new_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C): 1 for the background and each new class an image is labelled with, 0 for the old classes, whose labels
    a step does not have. new_labels: (B, C - C_old)."""
    old_count = num_classes - new_labels.shape[1]
    return torch.cat([torch.ones_like(new_labels[:, :1]), new_labels.new_zeros(len(new_labels), old_count - 1),
                      new_labels], 1)


def confident_localizer_targets(masks: torch.Tensor, share: float = CONFIDENT_SHARE,
                                background_share: float = CONFIDENT_BACKGROUND_SHARE,
                                floor: float = CONFIDENT_FLOOR) -> torch.Tensor:
    """The localizer's self-training targets from its refined masks m (B, C, H, W): pixel i is confidently of class c
    where m_ic > max(κ_c · max_j m_jc, κ_low), the maximum over the image's pixels j, κ_c `background_share` for the
    background and `share` for the other classes, κ_low `floor`. A pixel confident of no class or of several is left
    out. (B, C, H, W): one-hot on a confident pixel, all 0 on one left out."""
    peaks = masks.flatten(2).amax(-1)
    shares = torch.full_like(peaks[:1], share)
    shares[:, 0] = background_share
    confident = masks > (shares * peaks).clamp(min=floor)[:, :, None, None]
    return (confident & (confident.sum(1, keepdim=True) == 1)).to(masks)


def balanced_localizer_loss(maps: torch.Tensor, targets: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
    """Class-balanced cross-entropy of the localizer's scores z (B, C, H, W) against confident targets t on their grid
    (`confident_localizer_targets`): per image, w / |I| · sum_i ω_i CE(z_i, t_i), with ω_i = (N - n_c) / (1 + N)
    for pixel i of class c, n_c the image's confident pixels of c and N = sum_c n_c, and ω_i = 0 where i was left
    out; with two classes each totals n_bg n_fg / (1 + N), so that a small object weighs as much as the background.
    w is 1 where every class the image shows (`shown` (B, C), `shown_classes`) has a confident pixel, 0 otherwise:
    a target without one of the image's classes has given that class's pixels to another. The mean over images."""
    counts = targets.flatten(2).sum(-1)
    total = counts.sum(-1, keepdim=True)
    pixel_weights = (targets * ((total - counts) / (1 + total))[:, :, None, None]).sum(1)
    cross_entropy = -(targets * maps.log_softmax(1)).sum(1)
    complete = ((counts > 0) == shown.bool()).all(-1)
    return (complete * (pixel_weights * cross_entropy).flatten(1).mean(-1)).mean()


def old_model_image_labels(old_logits: torch.Tensor) -> torch.Tensor:
    """(B, C_old): the image labels of the background and the old classes, which a step's images do not carry, read
    from the old model's scores (B, C_old, H, W): the background always (Araslanov & Roth, CVPR'20, whose nGWP the
    localizer pools with, count it present in every image), an old class where it is the old model's prediction on
    at least one pixel, its argmax with σ above 0.5. A single pixel suffices: a count or share of pixels would be
    a threshold fitted to one dataset's object sizes, while argmax and σ > 0.5 are the old model's own decision."""
    peaks = old_logits.amax(1, keepdim=True)
    predicted = (old_logits == peaks) & (peaks.sigmoid() > OLD_MODEL_DECISION)
    labels = predicted.flatten(2).any(-1).to(old_logits)
    labels[:, 0] = 1
    return labels


def all_classes_image_loss(scores: torch.Tensor, old_labels: torch.Tensor, new_labels: torch.Tensor) -> torch.Tensor:
    """L_CLS over every class: BCE of the image scores (B, C) against the old classes' labels (B, C_old,
    `old_model_image_labels`) and the new ones' (B, C - C_old), summed over classes, divided by the number of new
    classes and averaged over images, so that each class weighs what a new class weighs in WILSON's L_CLS. With
    labels for the background and the old classes, a new class that claims every pixel is penalised for taking
    theirs, which WILSON's L_CLS cannot do when every image of a batch shows the new class."""
    labels = torch.cat([old_labels, new_labels], 1)
    per_class = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
    return per_class.sum(1).mean() / new_labels.shape[1]
