"""The "figures" look: a second construction of the synthetic VOC stand-in, held out to report on, never to tune on.

Where the "shapes" look puts one textured blob per object on a square, cluttered gradient, this one stands
articulated figures on outdoor scenes at VOC's image sizes: a torso, 0-4 limbs and a head at one end. The head is
the key part, a saturated colour and pattern of its class's own (the dog's face). Classes 2k-1 and 2k share their
body's build, colour and texture, and class-free distractor figures wear the same bodies under a muted head or
none, so the body alone never names a class; with the head it still marks the whole figure. Texture kinds and
clutter are ones the shapes look does not use. Regions are drawn only around each figure.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsseg.data.synth_look import (
    GOLDEN_RATIO,
    Frame,
    Texture,
    finish_image,
    hsv,
    muted_colour,
    pick_object_classes,
    smooth_noise,
)

# Figure looks are fixed across datasets and seeds, as the shapes look's are; a seed of their own.
FIGURE_STYLE_SEED = 2007
BODY_TEXTURES = ("shading", "hatching", "cells", "marble")
HEAD_PATTERNS = ("dot", "ring", "split", "cross")
# VOC 2012 images: most 500 px wide and 333-375 px high, about a third portrait, a few of other sizes.
SIZE_ODDS = (0.6, 0.3, 0.1)             # landscape, portrait, any
VOC_LONG_SIDE, VOC_SHORT_SIDES, ANY_SIDES = 500, (333, 375), (320, 500)
LENGTH_RANGE = (0.2, 0.6)               # figure length (torso and head) over the image's short side
HEAD_SHARE_RANGE = (0.12, 0.18)         # head area over figure area
HEAD_OVERLAP = 0.25                     # the part of the head's radius that overlaps the torso's end: a neck
# Texture periods are in pixels of the image scaled to a 128 px short side, as the CPU pipelines see it.
REFERENCE_SHORT_SIDE = 128
CELL_TABLE = 16                         # cells of the Voronoi texture repeat after this many periods


@dataclass(frozen=True)
class Limb:
    position: float         # where it leaves the torso: -1 the tail end, 1 the head end
    offset: float           # across the torso, in half widths
    angle: float            # its direction, radians from the torso's axis towards the head


@dataclass(frozen=True)
class Body:
    """A torso (a rounded box, lengths in torso lengths) with limbs, in one texture."""

    aspect: float           # torso width over length
    rounding: float         # corner radius over half the torso's width: 1 makes a capsule
    limbs: tuple[Limb, ...]
    limb_length: float      # over torso length
    limb_width: float       # over torso width
    texture: Texture

    def area(self) -> float:
        """In squared torso lengths, counting limbs whole though they overlap the torso a little."""
        corner = self.rounding * self.aspect / 2
        limbs = len(self.limbs) * self.limb_length * self.limb_width * self.aspect
        return self.aspect - (4 - np.pi) * corner ** 2 + limbs


@dataclass(frozen=True)
class Head:
    radius: float           # along the torso's axis, over torso length
    aspect: float           # across over along: 1 a circle
    texture: Texture        # a pattern of HEAD_PATTERNS; colours (main, partner)


@dataclass(frozen=True)
class FigureStyle:
    body: Body
    head: Head | None       # distractors may have none


@dataclass(frozen=True)
class Part:
    """A rounded box placed in the image; a capsule when `corner` is its half width."""

    centre: tuple[float, float]
    angle: float
    half_length: float
    half_width: float
    corner: float

    def reach(self) -> float:
        return float(np.hypot(self.half_length, self.half_width))

    def point(self, along: float, across: float) -> tuple[float, float]:
        """The image (row, col) of a point given in this part's axes (as `Frame.point`)."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        return self.centre[0] + along * sin + across * cos, self.centre[1] + along * cos - across * sin


def figure_styles(num_foreground: int) -> list[FigureStyle]:
    """The look of classes 1..num_foreground (list position 0 is class 1): pairs share a body."""
    rng = np.random.default_rng(FIGURE_STYLE_SEED)
    num_pairs = (num_foreground + 1) // 2
    # Limb counts cycle through 0-4, so every build occurs and pairs of one texture kind differ in build.
    bodies = [_random_body(rng, pair % 5, _pair_texture(rng, pair, num_pairs)) for pair in range(num_pairs)]
    return [FigureStyle(bodies[index // 2], _class_head(rng, index, bodies[index // 2]))
            for index in range(num_foreground)]


def draw_figure_scene(rng: np.random.Generator,
                      styles: list[FigureStyle]) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """An outdoor scene with 1-4 class figures and 1-3 class-free ones in random order, so distractors
    sometimes stand in front of objects. Returns the image and each figure's mask and class (0: none)."""
    height, width = voc_image_size(rng)
    canvas = _outdoor_background(rng, height, width)
    figure_classes = pick_object_classes(rng, len(styles)) + [0] * int(rng.integers(1, 4))
    figure_classes = [int(class_index) for class_index in rng.permutation(figure_classes)]
    masks = [_draw_figure(canvas, rng, styles[class_index - 1] if class_index else _distractor_style(rng, styles))
             for class_index in figure_classes]
    return finish_image(canvas, rng), masks, figure_classes


def voc_image_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) drawn as VOC 2012's images are distributed."""
    orientation = rng.choice(len(SIZE_ODDS), p=SIZE_ODDS)
    short = int(rng.integers(VOC_SHORT_SIDES[0], VOC_SHORT_SIDES[1] + 1))
    if orientation == 0:
        return short, VOC_LONG_SIDE
    if orientation == 1:
        return VOC_LONG_SIDE, short
    height, width = rng.integers(ANY_SIDES[0], ANY_SIDES[1] + 1, size=2)
    return int(height), int(width)


def _pair_texture(rng: np.random.Generator, pair: int, num_pairs: int) -> Texture:
    # Hues evenly spaced, one per pair, so pairs wearing the same texture kind lie far apart on the circle; of
    # the offsets, 0.35 keeps each body's hue furthest from its own two heads' (0.05 or more with 20 classes).
    # Saturation lies between the muted scene's and the vivid heads'.
    base = hsv(pair / num_pairs + 0.35, rng.uniform(0.4, 0.55), rng.uniform(0.55, 0.85))
    return _shaded_texture(rng, BODY_TEXTURES[pair % len(BODY_TEXTURES)], base)


def _shaded_texture(rng: np.random.Generator, kind: str, base: tuple[float, float, float]) -> Texture:
    darkening = rng.uniform(0.55, 0.75)
    return Texture(kind, (base, tuple(channel * darkening for channel in base)), float(rng.uniform(6.0, 10.0)))


def _random_body(rng: np.random.Generator, limb_count: int, texture: Texture) -> Body:
    """An elongated torso with `limb_count` limbs: a tail, a pair of legs at the back, arms near the head."""
    tail = (Limb(-1.0, 0.0, np.pi),)
    legs = tuple(Limb(-0.55, side * 0.6, side * rng.uniform(1.9, 2.5)) for side in (1, -1))
    arms = tuple(Limb(0.45, side * 0.6, side * rng.uniform(1.1, 1.6)) for side in (1, -1))
    limbs = ((), tail, legs, arms + tail, arms + legs)[limb_count]
    return Body(aspect=float(rng.uniform(0.3, 0.55)), rounding=float(rng.uniform(0.5, 1.0)), limbs=limbs,
                limb_length=float(rng.uniform(0.35, 0.8)), limb_width=float(rng.uniform(0.28, 0.4)),
                texture=texture)


def _head_of(rng: np.random.Generator, body: Body, texture: Texture) -> Head:
    share, aspect = rng.uniform(*HEAD_SHARE_RANGE), 1.0 if rng.random() < 0.5 else float(rng.uniform(0.6, 0.8))
    area = share / (1 - share) * body.area()
    return Head(float(np.sqrt(area / (np.pi * aspect))), aspect, texture)


def _class_head(rng: np.random.Generator, index: int, body: Body) -> Head:
    # Golden-ratio hue steps put the two classes of a pair (neighbours) far apart; pattern and partner
    # colour change with the index too, so no two classes of 20 share a head.
    partner = hsv(0, 0, 0.95) if (index // len(HEAD_PATTERNS)) % 2 else hsv(0, 0, 0.08)
    texture = Texture(HEAD_PATTERNS[index % len(HEAD_PATTERNS)], (hsv(index * GOLDEN_RATIO, 1.0, 1.0), partner), 0)
    return _head_of(rng, body, texture)


def _distractor_style(rng: np.random.Generator, styles: list[FigureStyle]) -> FigureStyle:
    """Half wear a class's body, half a body kind in a muted colour; the head is muted or missing."""
    if rng.random() < 0.5:
        texture = styles[rng.integers(len(styles))].body.texture
    else:
        texture = _shaded_texture(rng, BODY_TEXTURES[rng.integers(len(BODY_TEXTURES))], muted_colour(rng))
    body = _random_body(rng, int(rng.integers(0, 5)), texture)
    if rng.random() < 0.5:
        return FigureStyle(body, None)
    pattern = HEAD_PATTERNS[rng.integers(len(HEAD_PATTERNS))]
    return FigureStyle(body, _head_of(rng, body, Texture(pattern, (muted_colour(rng), muted_colour(rng)), 0)))


def _outdoor_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Sky over a horizon at 30-70 % of the height, textured ground below, buildings, poles and fences."""
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    horizon = height * rng.uniform(0.3, 0.7) + (cols - width / 2) * rng.uniform(-0.08, 0.08)
    is_sky = rows < horizon
    hue, saturation = rng.uniform(0.5, 0.68), rng.uniform(0.15, 0.35)
    zenith = np.asarray(hsv(hue, saturation, rng.uniform(0.55, 0.75)), np.float32)
    haze = np.asarray(hsv(hue, 0.4 * saturation, rng.uniform(0.8, 0.95)), np.float32)
    sky = zenith + np.clip(rows / horizon.max(), 0, 1)[..., None] * (haze - zenith)
    soil = np.asarray(hsv(rng.uniform(0.06, 0.33), rng.uniform(0.15, 0.35), rng.uniform(0.3, 0.55)), np.float32)
    clouds, fields, grain = (smooth_noise(rng, (height, width), int(rng.integers(*cells)), channels=1)[..., 0]
                             for cells in ((3, 6), (4, 10), (40, 80)))
    light = np.where(is_sky, 0.96 + 0.08 * clouds, 0.6 + 0.6 * fields + 0.3 * grain)
    canvas = np.where(is_sky[..., None], sky, soil) * light[..., None]
    for _ in range(int(rng.integers(0, 4))):
        _add_building(canvas, rng, horizon[0])
    for _ in range(int(rng.integers(0, 3))):
        _add_pole(canvas, rng, horizon[0])
    if rng.random() < 0.5:
        _add_fence(canvas, rng, horizon[0])
    return canvas


def _add_building(canvas: np.ndarray, rng: np.random.Generator, horizon: np.ndarray) -> None:
    height, width = canvas.shape[:2]
    left = rng.uniform(-0.05, 0.95) * width
    left, right = (int(np.clip(side, 0, width)) for side in (left, left + width * rng.uniform(0.06, 0.25)))
    base = int(horizon[(left + right) // 2] + rng.uniform(0, 0.05) * height)
    top = max(0, base - int(height * rng.uniform(0.1, 0.35)))
    facade = canvas[top:base, left:right]
    facade[:] = muted_colour(rng)
    window_rows = np.arange(facade.shape[0])[:, None] % int(rng.integers(8, 16)) < 4
    window_cols = np.arange(facade.shape[1])[None, :] % int(rng.integers(8, 16)) < 5
    facade[window_rows & window_cols] *= rng.uniform(0.5, 0.8)


def _add_pole(canvas: np.ndarray, rng: np.random.Generator, horizon: np.ndarray) -> None:
    height, width = canvas.shape[:2]
    column = int(rng.integers(0, width))
    base = int(horizon[column] + rng.uniform(0.05, 0.3) * height)
    top = max(0, base - int(height * rng.uniform(0.3, 0.7)))
    canvas[top:base, column:column + int(rng.integers(2, 6))] = muted_colour(rng)


def _add_fence(canvas: np.ndarray, rng: np.random.Generator, horizon: np.ndarray) -> None:
    height, width = canvas.shape[:2]
    left, right = sorted(int(column) for column in rng.integers(0, width, size=2))
    base = int(horizon[(left + right) // 2] + rng.uniform(0.05, 0.25) * height)
    post_height, spacing = int(height * rng.uniform(0.05, 0.1)), int(rng.integers(15, 35))
    colour = muted_colour(rng)
    fence = canvas[max(0, base - post_height):base, left:right]
    fence[:, np.arange(fence.shape[1]) % spacing < 3] = colour
    for rail in (0.2, 0.6):
        fence[int(rail * fence.shape[0]):int(rail * fence.shape[0]) + 2] = colour


def _draw_figure(canvas: np.ndarray, rng: np.random.Generator, style: FigureStyle) -> np.ndarray:
    """Paint one figure (body, then head) onto `canvas`; returns its mask over the image."""
    height, width = canvas.shape[:2]
    short = min(height, width)
    head_radius = style.head.radius if style.head else 0.0
    length = short * np.exp(rng.uniform(*np.log(LENGTH_RANGE)))
    torso_length = length / (1 + (2 - HEAD_OVERLAP) * head_radius)
    # The neck lies inside the image, so a head is seldom cut off while the rest of a figure may be.
    neck, angle = rng.uniform(0.02, 0.98, size=2) * (height, width), rng.uniform(0, 2 * np.pi)
    centre = (float(neck[0] - np.sin(angle) * torso_length / 2), float(neck[1] - np.cos(angle) * torso_length / 2))
    torso = _torso(style.body, centre, angle, torso_length)
    parts = [torso] + _limbs(rng, style.body, torso, torso_length)
    head = _head_part(rng, style.head, torso, torso_length) if style.head else None
    region = _region([*parts, head] if head else parts, (height, width))
    mask = np.zeros((height, width), bool)
    frames = [frame_over(region, part.centre, part.angle) for part in parts]
    body = np.logical_or.reduce([_inside(part, frame) for part, frame in zip(parts, frames, strict=True)])
    period = style.body.texture.period * short / REFERENCE_SHORT_SIDE
    area = canvas[region]
    weight = _body_weight(style.body.texture.kind, frames[0], body, period, rng)
    area[body] = _blend(style.body.texture, weight) * rng.uniform(0.85, 1.1)
    mask[region] = body
    if head:
        head_frame = frame_over(region, head.centre, head.angle)
        along, across = head_frame.along / head.half_length, head_frame.across / head.half_width
        inside = np.hypot(along, across) <= 1
        area[inside] = _blend(style.head.texture, _head_weight(style.head.texture.kind, along[inside], across[inside]))
        mask[region] |= inside
    return mask


def _torso(body: Body, centre: tuple[float, float], angle: float, torso_length: float) -> Part:
    half_width = body.aspect * torso_length / 2
    return Part(centre, angle, torso_length / 2, half_width, body.rounding * half_width)


def _limbs(rng: np.random.Generator, body: Body, torso: Part, torso_length: float) -> list[Part]:
    """Limbs leave the torso at their recipe's places, each turned a little: the figure's pose."""
    half_width, length = body.limb_width * torso.half_width, body.limb_length * torso_length
    parts = []
    for limb in body.limbs:
        anchor = torso.point(limb.position * torso.half_length, limb.offset * torso.half_width)
        angle = torso.angle + limb.angle + rng.uniform(-0.3, 0.3)
        centre = (anchor[0] + np.sin(angle) * length / 2, anchor[1] + np.cos(angle) * length / 2)
        parts.append(Part(centre, angle, length / 2 + half_width, half_width, half_width))
    return parts


def _head_part(rng: np.random.Generator, head: Head, torso: Part, torso_length: float) -> Part:
    """The box of the head, drawn as the ellipse inscribed in it: it hangs off the torso's front end, turned
    up to 25 degrees as a neck allows."""
    radius = head.radius * torso_length
    end = torso.point(torso.half_length, 0.0)
    angle = torso.angle + rng.uniform(-0.45, 0.45)
    reach = (1 - HEAD_OVERLAP) * radius
    centre = (end[0] + np.sin(angle) * reach, end[1] + np.cos(angle) * reach)
    return Part(centre, angle, radius, radius * head.aspect, radius * head.aspect)


def _region(parts: list[Part], shape: tuple[int, int]) -> tuple[slice, slice]:
    """The pixels of the image within reach of any part (empty when the figure lies outside)."""
    return tuple(slice(int(np.clip(np.floor(min(part.centre[axis] - part.reach() for part in parts)), 0, side)),
                       int(np.clip(np.ceil(max(part.centre[axis] + part.reach() for part in parts)) + 1, 0, side)))
                 for axis, side in enumerate(shape))


def frame_over(region: tuple[slice, slice], centre: tuple[float, float], angle: float) -> Frame:
    """A part's axes over a region of an image of any shape."""
    dy = np.arange(region[0].start, region[0].stop, dtype=np.float32)[:, None] - np.float32(centre[0])
    dx = np.arange(region[1].start, region[1].stop, dtype=np.float32)[None, :] - np.float32(centre[1])
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return Frame(centre, angle, region, dx * cos + dy * sin, dy * cos - dx * sin)


def _inside(part: Part, frame: Frame) -> np.ndarray:
    """Pixels within the rounded box: within `corner` of the box shrunk by `corner`."""
    along = np.maximum(np.abs(frame.along) - (part.half_length - part.corner), 0)
    across = np.maximum(np.abs(frame.across) - (part.half_width - part.corner), 0)
    return np.hypot(along, across) <= part.corner


def _blend(texture: Texture, weight: np.ndarray) -> np.ndarray:
    first, second = (np.asarray(colour, np.float32) for colour in texture.colours)
    return first + np.asarray(weight, np.float32)[..., None] * (second - first)


def _body_weight(kind: str, torso: Frame, body: np.ndarray, period: float, rng: np.random.Generator) -> np.ndarray:
    """How far each body pixel leans to the darker shade, in the torso's axes so limbs continue the pattern."""
    along, across = torso.along[body], torso.across[body]
    if kind == "shading":
        light = rng.uniform(0, 2 * np.pi)
        ramp = along * np.cos(light) + across * np.sin(light)
        return (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
    if kind == "hatching":
        return ((along + across) / (np.sqrt(2) * period)) % 1 < 0.35
    if kind == "cells":
        return _voronoi_cells(along / period, across / period, rng)
    veins = smooth_noise(rng, body.shape, max(3, int(max(body.shape) / (2 * period))), channels=1)[..., 0]
    return 0.5 + 0.5 * np.sin(2 * np.pi * along / period + 4 * np.pi * veins[body])


def _voronoi_cells(along: np.ndarray, across: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A shade per cell around jittered grid points and dark seams between cells, like a giraffe's coat;
    the nearest point of a jittered grid is always among the 3 x 3 grid cells around a pixel."""
    table = rng.random((3, CELL_TABLE, CELL_TABLE)).astype(np.float32)
    cell_along, cell_across = np.floor(along).astype(np.int64), np.floor(across).astype(np.int64)
    nearest = second = np.full(along.shape, np.inf, np.float32)
    shade = np.zeros(along.shape, np.float32)
    for step_along in (-1, 0, 1):
        for step_across in (-1, 0, 1):
            row, col = (cell_along + step_along) % CELL_TABLE, (cell_across + step_across) % CELL_TABLE
            distance = np.hypot(cell_along + step_along + table[0, row, col] - along,
                                cell_across + step_across + table[1, row, col] - across)
            closer = distance < nearest
            second = np.where(closer, nearest, np.minimum(second, distance))
            shade = np.where(closer, table[2, row, col], shade)
            nearest = np.minimum(nearest, distance)
    return np.where(second - nearest < 0.12, 1.0, 0.6 * shade)


def _head_weight(pattern: str, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Where the head wears its partner colour; coordinates are over the head's radii."""
    radius = np.hypot(along, across)
    if pattern == "dot":
        return radius < 0.45
    if pattern == "ring":
        return (radius > 0.45) & (radius < 0.72)
    if pattern == "split":
        return across > 0
    return (np.abs(along) < 0.2) | (np.abs(across) < 0.2)
