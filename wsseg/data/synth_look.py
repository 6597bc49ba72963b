"""How synthetic objects and backgrounds look, drawn with vectorised numpy on a pixel grid.

Classes are built to reproduce what makes weak supervision hard on photos (docs/METHODS.md §1): each class
carries a small, saturated "key part" (the dog's face) on a larger body. The body's texture pattern is shared
by every fourth class and by class-free distractors; its moderately saturated hue, its own among the classes,
and its shape set it apart. A classifier can name the class from the key part alone, so plain CAMs cover
little of the body; the body's colour, shape and contact with the key part still make full masks learnable.
The scene's make-up (how many classes and objects) and its finish are shared with the "figures" look.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

SHAPE_FAMILIES = ("superellipse", "polygon", "blob")
BODY_TEXTURES = ("stripes", "checker", "spots", "grain")
KEY_PATTERNS = ("checker", "stripes", "rings", "dot")
# Class looks are fixed across datasets and seeds, as a dog looks like a dog in every photo collection.
STYLE_SEED = 2012
GOLDEN_RATIO = 0.618033988749895
# No outline reaches further than this many radii from its centre: a blob's harmonics add up to at most
# 0.9 and a boxy superellipse's corner lies at most sqrt(2) out.
MAX_OUTLINE_RADIUS = 2.0
CLASS_COUNT_ODDS = (0.35, 0.4, 0.25)    # images with 1, 2 and 3 classes
MAX_OBJECTS = 4

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Shape:
    family: str
    aspect: float                           # minor over major axis
    corners: int = 0                        # polygon
    exponent: float = 2.0                   # superellipse: 2 an ellipse, larger boxier, below 2 star-like
    harmonics: tuple[float, ...] = ()       # blob: amplitudes of the radial harmonics 2, 3, 4, ...


@dataclass(frozen=True)
class Texture:
    kind: str
    colours: tuple[RGB, RGB]
    period: float                           # in pixels, before the `scale` that `paint_texture` applies


@dataclass(frozen=True)
class ClassStyle:
    body_shape: Shape
    body_texture: Texture
    key_texture: Texture


@dataclass(frozen=True)
class Frame:
    """Coordinates of the pixels in `region` relative to an object's centre (row, col), rotated into the
    object's axes. Drawing only inside the object's region keeps a scene to a few milliseconds."""

    centre: tuple[float, float]
    angle: float
    region: tuple[slice, slice]
    along: np.ndarray
    across: np.ndarray

    @classmethod
    def at(cls, size: int, centre: tuple[float, float], angle: float,
           region: tuple[slice, slice] | None = None) -> Frame:
        region = region or (slice(0, size), slice(0, size))
        rows, cols = (grid[region] for grid in pixel_grid(size))
        dy, dx = rows - centre[0], cols - centre[1]
        cos, sin = np.cos(angle), np.sin(angle)
        return cls(centre, angle, region, dx * cos + dy * sin, dy * cos - dx * sin)

    def point(self, along: float, across: float) -> tuple[float, float]:
        """The image (row, col) of a point given in this frame."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        return self.centre[0] + along * sin + across * cos, self.centre[1] + along * cos - across * sin

    def distance(self) -> np.ndarray:
        return np.hypot(self.along, self.across)

    def full_image(self, mask: np.ndarray, size: int) -> np.ndarray:
        """A mask over this frame's region placed in an image of side `size`."""
        placed = np.zeros((size, size), bool)
        placed[self.region] = mask
        return placed


def region_around(size: int, centre: tuple[float, float], reach: float) -> tuple[slice, slice]:
    """The part of the image within `reach` pixels of `centre` along each axis (empty when all outside)."""
    return tuple(slice(int(np.clip(np.floor(coordinate - reach), 0, size)),
                       int(np.clip(np.ceil(coordinate + reach) + 1, 0, size))) for coordinate in centre)


@lru_cache(maxsize=4)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


def class_styles(num_foreground: int) -> list[ClassStyle]:
    """The look of classes 1..num_foreground (list position 0 is class 1)."""
    rng = np.random.default_rng(STYLE_SEED)
    return [ClassStyle(_class_shape(rng, index), _body_texture(rng, index, num_foreground), _key_texture(index))
            for index in range(num_foreground)]


def distractor_texture(rng: np.random.Generator) -> Texture:
    """A body pattern in a muted colour: it looks like an object, but no class wears those colours."""
    return _body_pattern(rng, BODY_TEXTURES[rng.integers(len(BODY_TEXTURES))], muted_colour(rng))


def random_shape(rng: np.random.Generator) -> Shape:
    """A shape of any family with any parameters: what distractors and clutter look like."""
    family = SHAPE_FAMILIES[rng.integers(len(SHAPE_FAMILIES))]
    return Shape(family, aspect=float(rng.uniform(0.3, 1.0)), corners=int(rng.integers(3, 8)),
                 exponent=float(rng.uniform(1.2, 6.0)), harmonics=tuple(rng.uniform(0.0, 0.3, size=3)))


def shape_mask(shape: Shape, frame: Frame, radius: float, phase: float) -> np.ndarray:
    """Pixels inside `shape` of major radius `radius`; `phase` turns the outline's features."""
    along, across = frame.along / radius, frame.across / (radius * shape.aspect)
    theta = np.arctan2(across, along) + phase
    return np.hypot(along, across) <= _outline_radius(shape, theta)


def paint_texture(texture: Texture, frame: Frame, scale: float, rng: np.random.Generator) -> np.ndarray:
    """The texture over the frame's region, (h, w, 3) float in [0, 1], laid out in the object's axes."""
    period, kind = texture.period * scale, texture.kind
    extent = frame.along.shape
    cells = max(3, int(max(extent) / period))
    if kind == "stripes":
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * frame.along / period)
    elif kind == "checker":
        weight = (np.floor(frame.along / period) + np.floor(frame.across / period)) % 2
    elif kind == "rings":
        weight = np.floor(frame.distance() / period) % 2
    elif kind == "dot":
        weight = (frame.distance() > period).astype(np.float32)
    elif kind == "spots":
        weight = smooth_noise(rng, extent, cells, channels=1)[..., 0] > 0.55
    else:
        weight = smooth_noise(rng, extent, cells, channels=1)[..., 0]
    first, second = (np.asarray(colour, np.float32) for colour in texture.colours)
    return first + np.asarray(weight, np.float32)[..., None] * (second - first)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, channels: int = 3) -> np.ndarray:
    """(H, W, channels) noise in [0, 1] varying over about `cells` steps across (bicubic upsampling)."""
    height, width = shape
    if not height or not width:
        return np.zeros((height, width, channels), np.float32)
    coarse = (rng.random((cells, cells, channels)) * 255).astype(np.uint8)
    image = Image.fromarray(coarse[..., 0] if channels == 1 else coarse, "L" if channels == 1 else "RGB")
    resized = image.resize((width, height), Image.BICUBIC)
    return np.asarray(resized, np.float32).reshape(height, width, channels) / 255


def pick_object_classes(rng: np.random.Generator, num_foreground: int) -> list[int]:
    """The class of each object of a scene, in drawing order: 1-3 classes, 1-4 objects."""
    num_classes = min(num_foreground, 1 + int(rng.choice(len(CLASS_COUNT_ODDS), p=CLASS_COUNT_ODDS)))
    present = rng.choice(num_foreground, size=num_classes, replace=False) + 1
    extra = rng.choice(present, size=int(rng.integers(num_classes, MAX_OBJECTS + 1)) - num_classes)
    return [int(class_index) for class_index in rng.permutation(np.concatenate([present, extra]))]


def finish_image(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise and a slight blur, so edges are soft as a lens leaves them."""
    canvas += rng.normal(0.0, 0.02, canvas.shape).astype(np.float32)
    image = Image.fromarray((np.clip(canvas, 0, 1) * 255).round().astype(np.uint8))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(0.5)))


def muted_colour(rng: np.random.Generator) -> RGB:
    """A low-saturation colour: bodies, backgrounds and clutter never reach the key parts' saturation."""
    return hsv(rng.random(), rng.uniform(0.05, 0.35), rng.uniform(0.3, 0.8))


def hsv(hue: float, saturation: float, value: float) -> RGB:
    return tuple(float(channel) for channel in colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def _outline_radius(shape: Shape, theta: np.ndarray) -> np.ndarray:
    if shape.family == "polygon":
        sector = 2 * np.pi / shape.corners
        return np.cos(sector / 2) / np.cos(np.mod(theta, sector) - sector / 2)
    if shape.family == "blob":
        wobble = sum(amplitude * np.sin((order + 2) * theta + order)
                     for order, amplitude in enumerate(shape.harmonics))
        return 1.0 + wobble
    power = shape.exponent
    return (np.abs(np.cos(theta)) ** power + np.abs(np.sin(theta)) ** power) ** (-1 / power)


def _class_shape(rng: np.random.Generator, index: int) -> Shape:
    family = SHAPE_FAMILIES[index % len(SHAPE_FAMILIES)]
    return Shape(family, aspect=float(rng.uniform(0.5, 1.0)), corners=3 + index % 5,
                 exponent=float(rng.choice([1.5, 2.0, 3.0, 5.0])),
                 harmonics=tuple(rng.uniform(0.05, 0.25, size=3)))


def _body_texture(rng: np.random.Generator, index: int, num_foreground: int) -> Texture:
    # Hues evenly spaced, one per class, so that classes sharing a pattern (every fourth) lie a fifth of the
    # circle apart (with 20 classes); the offset keeps each body's hue off its own key part's (golden-ratio
    # steps). Saturation lies between the muted background's and the vivid key part's.
    base = hsv(index / num_foreground + 0.33, rng.uniform(0.4, 0.55), rng.uniform(0.55, 0.85))
    return _body_pattern(rng, BODY_TEXTURES[index % len(BODY_TEXTURES)], base)


def _body_pattern(rng: np.random.Generator, kind: str, base: RGB) -> Texture:
    """A pattern of `base` and a darker shade of it, as a body or a distractor wears it."""
    darkening = rng.uniform(0.55, 0.8)
    return Texture(kind, (base, tuple(channel * darkening for channel in base)), float(rng.uniform(4.0, 9.0)))


def _key_texture(index: int) -> Texture:
    # Golden-ratio hue steps keep neighbouring classes' hues far apart; the pattern and the second colour
    # change with the index too, so no two classes of 20 share a key part.
    hue = index * GOLDEN_RATIO
    partner = (hsv(0, 0, 1.0), hsv(0, 0, 0.05), hsv(hue + 0.5, 1.0, 1.0))[(index // len(KEY_PATTERNS)) % 3]
    # The period is a fraction of the key part's radius, so every pattern shows a couple of cycles.
    return Texture(KEY_PATTERNS[index % len(KEY_PATTERNS)], (hsv(hue, 1.0, 1.0), partner), 0.5)
