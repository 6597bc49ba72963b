"""Decoding images and label masks into arrays, with errors that name the file."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from wsseg.data.locations import Location, StoredFile, read_location
from wsseg.errors import DataError

# Mask modes whose pixel values are class indices as stored; an RGB colour mask would need a palette lookup.
INDEX_MASK_MODES = ("P", "L")


def read_image(path: str | Location) -> np.ndarray:
    """The image at `path` as (H, W, 3) uint8 RGB, fully decoded so that truncated files fail here."""
    return np.asarray(_decode(path).convert("RGB"))


def decode_image(data: bytes, where: str) -> np.ndarray:
    """An encoded image's bytes (from a store, say) as `read_image` gives them; `where` names it in errors."""
    return np.asarray(_decode_bytes(data, where).convert("RGB"))


def image_size(path: str | Location) -> tuple[int, int]:
    """(width, height) of the image at `path`, from its header alone."""
    where = path if isinstance(path, StoredFile) else Path(path)
    # A stored image comes whole (S3 has no cheap header read); a local one is opened and its header read.
    source = io.BytesIO(read_location(where)) if isinstance(where, StoredFile) else where
    try:
        with Image.open(source) as image:
            return image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(where, f"cannot read image: {decode_problem(error)}") from None


def working_scale(height: int, width: int, working_size: int | None) -> float:
    """The factor that brings an image's short side down to `working_size` (never up; 1 when None)."""
    if not working_size:
        return 1.0
    return min(1.0, working_size / min(height, width))


def working_shape(height: int, width: int, working_size: int | None) -> tuple[int, int]:
    """(height, width) of the image at its working scale."""
    scale = working_scale(height, width, working_size)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) uint8 image resized to (height, width); PIL widens its filter when shrinking, so a
    downscaled image is antialiased rather than aliased."""
    height, width = shape
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, H, W) float maps resized to (N, height, width), bilinearly."""
    height, width = shape
    if maps.shape[1:] == (height, width):
        return maps
    return np.stack([np.asarray(Image.fromarray(np.asarray(plane, np.float32), "F").resize((width, height),
                                                                                          Image.BILINEAR))
                     for plane in maps]) if len(maps) else np.zeros((0, height, width), np.float32)


def read_mask(path: str | Location) -> np.ndarray:
    """The label mask at `path` as (H, W) uint8 class indices (255 = ignore)."""
    return np.asarray(_decode_mask(path))


def relabel_mask(source: str | Location, target: str | Path, lookup: np.ndarray) -> int:
    """Write the mask at `source` to `target` with each class index i replaced by `lookup[i]` (256 uint8 entries),
    as a PNG of the source's mode and palette, so that it reads and shows as the source does; the number of pixels
    whose index changed."""
    mask = _decode_mask(source)
    indices = np.asarray(mask)
    relabelled = lookup[indices]
    image = Image.fromarray(relabelled)
    if mask.mode == "P":
        image.putpalette(mask.getpalette())
    image.save(target, format="PNG")
    return int(np.count_nonzero(relabelled != indices))


def _decode_mask(path: str | Location) -> Image.Image:
    mask = _decode(path)
    if mask.mode not in INDEX_MASK_MODES:
        raise DataError(path, f"mask has PIL mode {mask.mode!r}; expected a palette ('P') or greyscale "
                              "('L') PNG whose pixel values are class indices")
    return mask


def _decode(path: str | Location) -> Image.Image:
    where = path if isinstance(path, StoredFile) else Path(path)
    return _decode_bytes(read_location(where), where)


def _decode_bytes(data: bytes, where) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        # PIL reports truncated and corrupt files as OSError (UnidentifiedImageError is one), a few as others.
        raise DataError(where, f"cannot decode image: {decode_problem(error)}") from None
    return image


def decode_problem(error: Exception) -> str:
    """What Pillow's decoding error says, without the in-memory buffer its unknown-format message names."""
    if isinstance(error, UnidentifiedImageError):
        return "not in an image format Pillow reads (JPEG, PNG, BMP, TIFF, ...); the file is corrupt or no image"
    return str(error)
