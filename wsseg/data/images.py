"""Decoding images and label masks into arrays, with errors that name the file."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from wsseg.errors import DataError

# Mask modes whose pixel values are class indices as stored; an RGB colour mask would need a palette lookup.
INDEX_MASK_MODES = ("P", "L")


def read_image(path: str | Path) -> np.ndarray:
    """The image at `path` as (H, W, 3) uint8 RGB, fully decoded so that truncated files fail here."""
    return np.asarray(_decode(path).convert("RGB"))


def read_mask(path: str | Path) -> np.ndarray:
    """The label mask at `path` as (H, W) uint8 class indices (255 = ignore)."""
    mask = _decode(path)
    if mask.mode not in INDEX_MASK_MODES:
        raise DataError(path, f"mask has PIL mode {mask.mode!r}; expected a palette ('P') or greyscale "
                              "('L') PNG whose pixel values are class indices")
    return np.asarray(mask)


def _decode(path: str | Path) -> Image.Image:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except OSError as error:
        raise DataError(path, f"cannot read file: {error.strerror}") from None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        # PIL reports truncated and corrupt files as OSError (UnidentifiedImageError is one), a few as others.
        raise DataError(path, f"cannot decode image: {error}") from None
    return image
