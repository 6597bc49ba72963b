"""Fully connected CRF (Krähenbühl & Koltun, NeurIPS'11) over per-pixel class probabilities, with pydensecrf,
the reference, or its PyTorch port (`wsseg.wsss.crf_torch`), chosen by `crf.backend` (`resolve_backend`; the
refinement takes the chosen backend's batched function, `wsseg.wsss.refinement.batched_crf`)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wsseg.errors import ConfigError

# The bilateral kernel widths in the literature (DeepLab, PSA, IRN) were tuned on PASCAL VOC images, about
# 500x375; `scale_sxy_to_image` shrinks the spatial widths in proportion to the image's side so a 128-px image
# is smoothed over the same fraction of its extent.
REFERENCE_SIDE = math.sqrt(500 * 375)
# Floor on probabilities before -log: a CAM of exactly 0 would otherwise give an infinite unary.
PROBABILITY_FLOOR = 1e-5
# "auto": the PyTorch CRF where CUDA is, pydensecrf (one CPU core per image, the faster of the two there) elsewhere.
CRF_BACKENDS = ("auto", "torch", "pydensecrf")


@dataclass(frozen=True)
class CrfParams:
    """Kernel settings of the dense CRF; defaults are the values PSA uses (sxy 80, srgb 13, compat 10)."""

    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    scale_sxy_to_image: bool = True

    @classmethod
    def from_config(cls, section: dict) -> CrfParams:
        return cls(**{name: section[name] for name in cls.__dataclass_fields__})

    def spatial_scale(self, height: int, width: int) -> float:
        return math.sqrt(height * width) / REFERENCE_SIDE if self.scale_sxy_to_image else 1.0


def crf_marginals(image: np.ndarray, probabilities: np.ndarray, params: CrfParams) -> np.ndarray:
    """The (N, H, W) float32 label marginals Q after mean-field inference.

    image: (H, W, 3) uint8 RGB. probabilities: (N, H, W), non-negative scores per label (normalised here).
    """
    import pydensecrf.densecrf as dcrf  # C extension; imported where used so the package imports without it

    labels, height, width = probabilities.shape
    if image.shape[:2] != (height, width):
        raise ValueError(f"image is {image.shape[:2]} but the probabilities are {(height, width)}")
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(unary_energy(probabilities))
    gaussian_sxy, bilateral_sxy = kernel_widths(params, height, width)
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=params.gaussian_compat)
    # pydensecrf takes a writable buffer; decoded images are often read-only views, hence the copy.
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=np.array(image, dtype=np.uint8, order="C"), compat=params.bilateral_compat)
    marginals = np.asarray(crf.inference(params.iterations), dtype=np.float32)
    return marginals.reshape(labels, height, width)


def crf_marginals_batch(images: Sequence[np.ndarray], probabilities: Sequence[np.ndarray],
                        params: CrfParams) -> list[np.ndarray]:
    """`crf_marginals` of each image in turn: pydensecrf has no batched inference."""
    return [crf_marginals(image, scores, params) for image, scores in zip(images, probabilities, strict=True)]


def resolve_backend(backend: str) -> str:
    """"torch" or "pydensecrf" for a `crf.backend` setting."""
    if backend not in CRF_BACKENDS:
        raise ConfigError(f"crf.backend is {backend!r}; choose one of {', '.join(CRF_BACKENDS)}")
    if backend != "auto":
        return backend
    import torch

    return "torch" if torch.cuda.is_available() else "pydensecrf"


def kernel_widths(params: CrfParams, height: int, width: int) -> tuple[float, float]:
    """The Gaussian and bilateral kernels' spatial widths (sxy) in pixels for an image of this size.

    The Gaussian kernel removes pixel-scale speckle and stays at >= 1 px; the bilateral kernel pulls labels
    along regions of similar colour, the part that snaps a blurry CAM to object edges (paper, eq. 3).
    """
    scale = params.spatial_scale(height, width)
    return max(params.gaussian_sxy * scale, 1.0), max(params.bilateral_sxy * scale, 1.0)


def unary_energy(probabilities: np.ndarray) -> np.ndarray:
    """Unary energy -log p (paper, eq. 1), as the contiguous float32 (N, H*W) array pydensecrf expects."""
    scores = np.maximum(probabilities.astype(np.float32), 0.0)
    scores /= np.maximum(scores.sum(axis=0, keepdims=True), PROBABILITY_FLOOR)
    energy = -np.log(np.maximum(scores, PROBABILITY_FLOOR))
    return np.ascontiguousarray(energy.reshape(len(scores), -1))
