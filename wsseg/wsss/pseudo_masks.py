"""From class activation maps to pixel pseudo masks: background scores, label maps, the uncertain band, PNGs.

A CAM file (the mine-cams step's output) holds `cams` (L, H, W), max-normalised, one row per image label, and
`labels` (L,), their global class indices. Label maps here use global indices: 0 background, 1..K classes,
255 (IGNORE_INDEX) for pixels left uncertain.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from wsseg.classes import IGNORE_INDEX, voc_palette

BACKGROUND_METHODS = ("adaptive", "constant", "psa")
# A floor under per-class thresholds: a class whose CAMs never rise above zero must not divide by zero.
MIN_THRESHOLD = 1e-3


def read_cam_file(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(cams float32 (L, H, W), labels int64 (L,)) from a mine-cams `.npz`; ValueError if it is malformed."""
    try:
        with np.load(io.BytesIO(data)) as archive:
            cams, labels = archive["cams"].astype(np.float32), archive["labels"].astype(np.int64)
    except (OSError, KeyError, ValueError, EOFError) as error:
        raise ValueError(f"not a CAM file with 'cams' and 'labels': {error}") from None
    if cams.ndim != 3 or labels.shape != (len(cams),):
        raise ValueError(f"cams {cams.shape} and labels {labels.shape} do not match (want (L, H, W) and (L,))")
    return cams, labels


def background_score(cams: np.ndarray, method: str, level: float) -> np.ndarray:
    """Background score per pixel, (H, W).

    "constant": `level` everywhere, the background threshold of CAM/IRN.
    "psa": (1 - max_c CAM_c)^level, PSA's background (Ahn & Kwak, CVPR'18, eq. 3): a larger exponent alpha
    gives a smaller background score, so more pixels go to the foreground.
    """
    height, width = cams.shape[1:]
    if method == "constant":
        return np.full((height, width), level, dtype=np.float32)
    if method == "psa":
        peak = cams.max(axis=0) if len(cams) else np.zeros((height, width), np.float32)
        return np.power(1.0 - np.clip(peak, 0.0, 1.0), level).astype(np.float32)
    raise ValueError(f"unknown background method {method!r}; choose one of {', '.join(BACKGROUND_METHODS)}")


def with_background(cams: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The (1 + L, H, W) score stack [background, CAMs] whose argmax is a local label map."""
    return np.concatenate([background[None].astype(np.float32), cams.astype(np.float32)], axis=0)


def in_threshold_units(cams: np.ndarray, labels: np.ndarray, thresholds: dict[int, float]) -> np.ndarray:
    """The (1 + L, H, W) scores [1, CAM_l / t_l]: each class against its own threshold, so that argmax is the
    class whose CAM exceeds its threshold by most, or background where none does."""
    levels = np.array([max(thresholds.get(int(label), 1.0), MIN_THRESHOLD) for label in labels], np.float32)
    return with_background(cams / levels[:, None, None], np.ones(cams.shape[1:], np.float32))


def to_global_labels(local: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Map local indices (0 = background, i = the image's i-th label) to global class indices, uint8."""
    lookup = np.concatenate([[0], labels]).astype(np.uint8)
    return lookup[local]


class CamThresholdSweep:
    """Label maps of one image's CAMs at many background thresholds, computing the argmax only once.

    argmax over [t, CAM_1..CAM_L] is the top CAM's class where its value exceeds t, else background.
    """

    def __init__(self, cams: np.ndarray, labels: np.ndarray):
        height, width = cams.shape[1:]
        if len(cams):
            self.peak = cams.max(axis=0)
            self.top_class = to_global_labels(cams.argmax(axis=0) + 1, labels)
        else:
            self.peak = np.zeros((height, width), np.float32)
            self.top_class = np.zeros((height, width), np.uint8)

    def at(self, threshold: float) -> np.ndarray:
        return np.where(self.peak > threshold, self.top_class, 0).astype(np.uint8)


def confident_labels(confident_foreground: np.ndarray, confident_background: np.ndarray) -> np.ndarray:
    """Combine the two CRF passes of IRN (Ahn et al., CVPR'19, sec. 3.1): keep a pixel's label where both
    agree, else mark it uncertain (255).

    `confident_foreground` comes from a pass with a high background score, so its foreground is trusted;
    `confident_background` from a pass with a low background score, so its background is trusted. Pixels
    where they disagree form the band around objects that the segmenter's loss ignores. (IRN keeps the
    first pass's class where both passes say foreground but disagree on the class; this is stricter.)
    """
    agree = confident_foreground == confident_background
    return np.where(agree, confident_foreground, IGNORE_INDEX).astype(np.uint8)


def encode_mask_png(mask: np.ndarray) -> bytes:
    """A (H, W) uint8 label map as a palette PNG with the VOC colours, the format of VOC's SegmentationClass."""
    if mask.ndim != 2:
        raise ValueError(f"a mask is (H, W), got shape {mask.shape}")
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    image.putpalette(voc_palette())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_mask_png(data: bytes) -> np.ndarray:
    """The (H, W) uint8 label indices of a palette or greyscale PNG mask."""
    with Image.open(io.BytesIO(data)) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"a mask PNG must be palette or greyscale, got mode {image.mode}")
        return np.array(image, dtype=np.uint8)
