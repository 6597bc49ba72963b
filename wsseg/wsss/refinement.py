"""One image's CAMs refined into a pseudo mask: two dense-CRF passes and IRN's uncertain band between them
(Ahn et al., CVPR'19, sec. 3.1), at the working size, optionally guided by saliency, with the CRF backend
`crf.backend` names (the two passes go to it as one batch)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from wsseg.data.images import resize_image, resize_maps, working_shape
from wsseg.wsss.crf import CrfParams, crf_marginals_batch, resolve_backend
from wsseg.wsss.pseudo_masks import (
    background_score,
    confident_labels,
    in_threshold_units,
    to_global_labels,
    with_background,
)
from wsseg.wsss.saliency_guidance import guided_by_saliency
from wsseg.wsss.thresholds import PassLevels

BatchedCrf = Callable[[Sequence[np.ndarray], Sequence[np.ndarray], CrfParams], list[np.ndarray]]


def batched_crf(backend: str) -> BatchedCrf:
    """The `crf_marginals_batch` of the backend `crf.backend` names."""
    if resolve_backend(backend) == "torch":
        from wsseg.wsss.crf_torch import crf_marginals_batch as torch_batch  # imports torch; pydensecrf runs need not

        return torch_batch
    return crf_marginals_batch


@dataclass(frozen=True)
class Refinement:
    """What refining an image takes besides the image: the crf settings, the passes' levels (None for PSA's
    background) and the working size. Picklable, for the worker processes."""

    settings: dict
    levels: PassLevels | None
    working_size: int | None


def refine_image(image: np.ndarray, cams: np.ndarray, labels: np.ndarray, refinement: Refinement,
                 saliency: np.ndarray | None = None) -> np.ndarray:
    """The pseudo mask (H, W) uint8 of one image: global class indices, 255 where the two passes disagree.

    The CRF runs at the working size; its marginals, not its labels, are upsampled, so that edges between
    labels stay smooth at the image's resolution. `saliency` (H, W) in [0, 1] guides the passes when given.
    """
    if len(labels) == 0:
        return np.zeros(image.shape[:2], dtype=np.uint8)
    params = CrfParams.from_config(refinement.settings)
    size = image.shape[:2]
    working = working_shape(*size, refinement.working_size)
    if working != size:
        image, cams = resize_image(image, working), resize_maps(cams, working)
        saliency = None if saliency is None else resize_maps(saliency[None], working)[0]
    scores = [pass_scores(cams, labels, refinement, which) for which in ("foreground", "background")]
    if saliency is not None:
        scores = [guided_by_saliency(pass_score, saliency) for pass_score in scores]
    marginals = batched_crf(refinement.settings["backend"])([image, image], scores, params)
    return confident_labels(*(to_global_labels(resize_maps(pass_marginals, size).argmax(axis=0), labels)
                              for pass_marginals in marginals))


def pass_scores(cams: np.ndarray, labels: np.ndarray, refinement: Refinement, which: str) -> np.ndarray:
    """The (1 + L, H, W) scores [background, CAMs] of the confident-`which` pass."""
    settings = refinement.settings
    if settings["background"] == "psa":
        alpha = settings["confident_fg_alpha" if which == "foreground" else "confident_bg_alpha"]
        return with_background(cams, background_score(cams, "psa", alpha))
    return in_threshold_units(cams, labels, getattr(refinement.levels, which))


def foreground_pass(image: np.ndarray, cams: np.ndarray, labels: np.ndarray, refinement: Refinement) -> np.ndarray:
    """The confident-foreground pass alone, at the working size: (h, w) global class indices."""
    working = working_shape(*image.shape[:2], refinement.working_size)
    image, cams = resize_image(image, working), resize_maps(cams, working)
    scores = pass_scores(cams, labels, refinement, "foreground")
    crf = batched_crf(refinement.settings["backend"])
    (marginals,) = crf([image], [scores], CrfParams.from_config(refinement.settings))
    return to_global_labels(marginals.argmax(0), labels)
