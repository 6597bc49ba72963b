"""Class-agnostic saliency maps S(i) in [0, 1], the object extent of saliency-guided pseudo masks (Oh et al., CVPR'17).

A saliency model's output, supplied by the user as one PNG per image, is the best source; without one, or for
images it lacks, a training-free built-in method stands in: spectral residual (Hou & Zhang, CVPR'07) or
frequency-tuned saliency (Achanta et al., CVPR'09).
"""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from wsseg.data.images import decode_problem
from wsseg.errors import ConfigError, DataError
from wsseg.store import LocalStore, StoreNotFound, open_store

BUILTIN_SOURCE = "builtin"

# Hou & Zhang analyse the grey image scaled to 64 px wide, as their published MATLAB code does: what counts as
# a "novel" part of the spectrum depends on that scale, and the method was tuned at it.
SPECTRAL_RESIDUAL_WIDTH = 64
# The n x n local average h_n that estimates the log spectrum's general shape; n = 3 in the paper and its code.
SPECTRAL_AVERAGE_SIZE = 3
# The paper's text gives sigma = 8 for the Gaussian g(x) that smooths the map; the authors' code smooths the
# 64-px map with fspecial('gaussian', [10, 10], 2.5). We follow the code: sigma 8 at 64 px blurs a small
# proto-object over a quarter of the image's width.
SPECTRAL_SMOOTHING_SIGMA = 2.5
# Floor under the amplitude spectrum so that log() stays finite where a frequency is absent (a flat image).
AMPLITUDE_FLOOR = 1e-8
# Achanta et al. blur with a 5x5 separable binomial kernel: enough to drop fine texture, noise and coding
# artefacts, small enough to keep the high frequencies that give salient objects well-defined borders.
BINOMIAL_KERNEL = np.array([1, 4, 6, 4, 1], dtype=np.float32) / 16
# 16-bit greyscale PNGs decode as 'I;16'; older Pillow releases open them as 'I'.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def spectral_residual(image: np.ndarray) -> np.ndarray:
    """Spectral-residual saliency (Hou & Zhang, CVPR'07) of an (H, W, 3) uint8 RGB image, (H, W) float32 in [0, 1]."""
    height, width = image.shape[:2]
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    if grey.min() == grey.max():
        # A flat image holds no proto-object; its spectrum is a lone DC term, whose residual is only the floor's.
        return np.zeros((height, width), dtype=np.float32)
    small_height = max(1, round(height * SPECTRAL_RESIDUAL_WIDTH / width))
    small = cv2.resize(grey, (SPECTRAL_RESIDUAL_WIDTH, small_height), interpolation=cv2.INTER_AREA)
    spectrum = np.fft.fft2(small)
    log_amplitude = np.log(np.maximum(np.abs(spectrum), AMPLITUDE_FLOOR))
    # R(f) = L(f) - h_n(f) * L(f), with 'replicate' borders as in the authors' imfilter call.
    general_shape = cv2.blur(log_amplitude, (SPECTRAL_AVERAGE_SIZE,) * 2, borderType=cv2.BORDER_REPLICATE)
    # S(x) = g(x) * |F^-1[exp(R(f) + i P(f))]|^2: back to the image plane with the original phase P(f).
    saliency = np.abs(np.fft.ifft2(np.exp(log_amplitude - general_shape + 1j * np.angle(spectrum)))) ** 2
    smoothed = cv2.GaussianBlur(saliency.astype(np.float32), (0, 0), SPECTRAL_SMOOTHING_SIGMA)
    return _normalised(cv2.resize(smoothed, (width, height), interpolation=cv2.INTER_LINEAR))


def frequency_tuned(image: np.ndarray) -> np.ndarray:
    """Frequency-tuned saliency (Achanta et al., CVPR'09) of an (H, W, 3) uint8 RGB image, (H, W) float32 in
    [0, 1]: S(x, y) = ||I_mu - I_whc(x, y)||, the CIE Lab distance of each blurred pixel from the mean colour."""
    lab = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    blurred = cv2.sepFilter2D(lab, -1, BINOMIAL_KERNEL, BINOMIAL_KERNEL)
    return _normalised(np.linalg.norm(blurred - lab.reshape(-1, 3).mean(axis=0), axis=2))


BUILTIN_SALIENCY = {"spectral_residual": spectral_residual, "frequency_tuned": frequency_tuned}


def _normalised(saliency: np.ndarray) -> np.ndarray:
    low, high = float(saliency.min()), float(saliency.max())
    if high <= low:
        return np.zeros(saliency.shape, dtype=np.float32)
    return ((saliency - low) / (high - low)).astype(np.float32)


def read_saliency_png(data: bytes, shape: tuple[int, int], where: str) -> np.ndarray:
    """A user's saliency map (PNG or JPEG; grey, palette, 16-bit grey or RGB(A), colour taken as its luma) as
    (H, W) float32 in [0, 1]. `shape` is its image's (H, W); `where` names the file in errors."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            saliency = _grey_levels(picture)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(where, f"cannot decode saliency map: {decode_problem(error)}") from None
    if saliency.shape != tuple(shape):
        raise DataError(where, f"saliency map is {saliency.shape[1]}x{saliency.shape[0]} but its image is "
                               f"{shape[1]}x{shape[0]}")
    return saliency


def _grey_levels(picture: Image.Image) -> np.ndarray:
    if picture.mode in SIXTEEN_BIT_MODES:
        return np.clip(np.asarray(picture, dtype=np.float32) / 65535, 0, 1)
    # Through the palette, not its indices: a palette map shows white where it is salient.
    return np.asarray(picture.convert("L"), dtype=np.float32) / 255


def default_config() -> dict:
    # source: "builtin", or a folder or store URI holding <image_id>.png maps from a saliency model.
    # fallback: compute the built-in map for an image the source has no map for, instead of failing.
    return {"source": BUILTIN_SOURCE, "builtin": "frequency_tuned", "fallback": True}


class SaliencySource:
    """Saliency maps by image id: the user's `<image_id>.png` where a source is named, else a built-in method.

    Each map comes with its origin: "user" (read), "builtin" (the source is "builtin") or "builtin_fallback"
    (computed for an image the source lacks), for the step's summary to count. A pickled copy reopens its
    store from the config.
    """

    def __init__(self, config: dict):
        self.config = dict(config)
        self.builtin = _builtin_method(config["builtin"])
        self.store = None if config["source"] == BUILTIN_SOURCE else _open_source(config["source"])

    def saliency(self, image_id: str, image: np.ndarray) -> tuple[np.ndarray, str]:
        """S(i) of `image` (H, W, 3) uint8 RGB, as (H, W) float32 in [0, 1], and its origin."""
        if self.store is None:
            return self.builtin(image), "builtin"
        key = f"{image_id}.png"
        try:
            data = self.store.get_bytes(key)
        except StoreNotFound:
            return self._fallback(key, image), "builtin_fallback"
        return read_saliency_png(data, image.shape[:2], f"{self.store.uri}/{key}"), "user"

    def _fallback(self, key: str, image: np.ndarray) -> np.ndarray:
        if not self.config["fallback"]:
            raise DataError(f"{self.store.uri}/{key}", f"no saliency map {key} for this image; add it, or set "
                            f"fallback: true to compute the built-in {self.config['builtin']!r} map instead")
        return self.builtin(image)

    def __reduce__(self):
        # An S3 store holds a network client that cannot cross to a worker; the copy reopens the source from
        # its URI (credentials from the worker's environment), as the refine step's workers reopen their stores.
        return type(self), (self.config,)


def _builtin_method(name: str):
    if name not in BUILTIN_SALIENCY:
        raise ConfigError(f"unknown built-in saliency method {name!r}; choose one of {', '.join(BUILTIN_SALIENCY)}")
    return BUILTIN_SALIENCY[name]


def _open_source(uri: str):
    store = open_store(uri)
    # A mistyped folder would otherwise pass silently, every image falling back to the built-in map.
    if isinstance(store, LocalStore) and not store.root.is_dir():
        raise ConfigError(f"saliency source {uri!r}: no such folder")
    return store
