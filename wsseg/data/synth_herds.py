"""The "herds" look: a third construction of the synthetic VOC stand-in, held out to report on, never to tune on.

Classes come in families of two or three, as VOC's cat/dog, cow/sheep/horse and bus/train/car do: every
member of a family has the same build (body outline, legs or wheels) and the same coat, and members differ in
one small part alone, the face at the body's front end (about a tenth of the animal). Animals stand on the
ground of a pasture scene at VOC's image sizes, larger the nearer they stand, and go in herds: several animals
of one class side by side, often touching or overlapping, now and then beside a herd of a sibling class. A few
faceless animals of the families' builds and coats are class-free. Coats, faces and scenery use none of the
patterns of the "shapes" and "figures" looks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsseg.data.synth_figures import frame_over, voc_image_size
from wsseg.data.synth_look import Texture, finish_image, hsv, muted_colour, smooth_noise

# Herd looks are fixed across datasets and seeds, as the other looks' are; a seed of their own.
HERD_STYLE_SEED = 1999
FAMILY_SIZES = (3, 2, 2)                # repeated until every class has a family: 3, 2, 2, 3, 2, 2, ...
COATS = ("patches", "dapple", "bands", "fur")
FACE_MARKS = ("eyes", "blaze", "muzzle", "mask")
BUILDS = ("four legs", "two wheels", "low")
BODY_LENGTH_RANGE = (0.25, 0.6)         # body length over the image's short side, for an animal at the bottom edge
FACE_LENGTH = 0.3                       # face length over body length: about a tenth of the animal's area
SIBLING_ODDS = 0.3                      # a scene with a second class takes the first one's sibling this often
HERD_SIZE_ODDS = (0.3, 0.3, 0.25, 0.15)  # herds of 1, 2, 3 and 4 animals
REFERENCE_SHORT_SIDE = 128              # coat periods are in pixels of the image scaled to this short side


@dataclass(frozen=True)
class Build:
    kind: str               # one of BUILDS
    aspect: float           # body height over body length
    squareness: float       # the body outline's superellipse exponent: 2 an ellipse, larger boxier
    leg_length: float       # over body height
    coat: Texture


@dataclass(frozen=True)
class HerdStyle:
    build: Build
    face: Texture | None    # class-free animals have none


def herd_styles(num_foreground: int) -> list[HerdStyle]:
    """The look of classes 1..num_foreground (list position 0 is class 1): a family shares its build."""
    rng = np.random.default_rng(HERD_STYLE_SEED)
    families = family_of(num_foreground)
    builds = [_family_build(rng, family, families[-1] + 1) for family in range(families[-1] + 1)]
    return [HerdStyle(builds[family], _face(index)) for index, family in enumerate(families)]


def family_of(num_foreground: int) -> list[int]:
    """Each class's family number, families of FAMILY_SIZES in turn (the last one cut to fit)."""
    families, family = [], 0
    while len(families) < num_foreground:
        families += [family] * FAMILY_SIZES[family % len(FAMILY_SIZES)]
        family += 1
    return families[:num_foreground]


def draw_herd_scene(rng: np.random.Generator,
                    styles: list[HerdStyle]) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """A pasture with one to three herds and up to two class-free animals, drawn far to near so nearer animals
    hide farther ones. Returns the image and each animal's mask and class (0: none)."""
    height, width = voc_image_size(rng)
    canvas, horizon = _pasture(rng, height, width)
    animals = [(class_index, _foot(rng, height, width, horizon, herd_centre))
               for class_index, herd_centre in _herds(rng, styles, height, width, horizon)
               for _ in range(1 + int(rng.choice(len(HERD_SIZE_ODDS), p=HERD_SIZE_ODDS)))]
    animals += [(0, _foot(rng, height, width, horizon, None)) for _ in range(int(rng.integers(0, 3)))]
    animals.sort(key=lambda animal: animal[1][0])
    masks = [_draw_animal(canvas, rng, styles[class_index - 1] if class_index else _faceless(rng, styles),
                          foot, horizon) for class_index, foot in animals]
    return finish_image(canvas, rng), masks, [class_index for class_index, _ in animals]


def _herds(rng: np.random.Generator, styles: list[HerdStyle], height: int, width: int,
           horizon: float) -> list[tuple[int, tuple[float, float]]]:
    """Each herd's class and centre on the ground: one class, two (the second often the first's sibling) or
    three."""
    families = family_of(len(styles))
    count = min(len(styles), 1 + int(rng.choice(3, p=(0.45, 0.4, 0.15))))
    classes = [int(rng.integers(len(styles)))]
    while len(classes) < count:
        siblings = [index for index, family in enumerate(families)
                    if family == families[classes[0]] and index not in classes]
        others = [index for index in range(len(styles)) if index not in classes]
        pool = siblings if siblings and rng.random() < SIBLING_ODDS else others
        classes.append(int(pool[rng.integers(len(pool))]))
    return [(class_index + 1, (rng.uniform(horizon + 0.1 * (height - horizon), height), rng.uniform(0, width)))
            for class_index in classes]


def _foot(rng: np.random.Generator, height: int, width: int, horizon: float,
          herd_centre: tuple[float, float] | None) -> tuple[float, float]:
    """Where an animal stands: beside its herd's centre (a body length or so away), or anywhere on the ground."""
    if herd_centre is None:
        return float(rng.uniform(horizon + 0.05 * (height - horizon), height)), float(rng.uniform(0, width))
    spread = _body_length(height, width, horizon, herd_centre[0])
    row = np.clip(herd_centre[0] + rng.normal(0, 0.25) * spread, horizon + 1, height + 0.1 * spread)
    return float(row), float(herd_centre[1] + rng.normal(0, 0.9) * spread)


def _body_length(height: int, width: int, horizon: float, row: float) -> float:
    """Nearer animals (lower in the image) look larger: at the horizon a third of their size at the bottom."""
    nearness = np.clip((row - horizon) / max(height - horizon, 1.0), 0.0, 1.2)
    return min(height, width) * np.mean(BODY_LENGTH_RANGE) * (1 / 3 + 2 / 3 * nearness)


def _draw_animal(canvas: np.ndarray, rng: np.random.Generator, style: HerdStyle, foot: tuple[float, float],
                 horizon: float) -> np.ndarray:
    """Paint one animal (legs, body, face) with its feet at `foot`; returns its mask over the image."""
    height, width = canvas.shape[:2]
    build = style.build
    length = _body_length(height, width, horizon, foot[0]) * np.exp(rng.uniform(-0.35, 0.35))
    body_height = build.aspect * length
    legs = build.leg_length * body_height
    centre = (foot[0] - legs - body_height / 2, foot[1])
    facing = 1.0 if rng.random() < 0.5 else -1.0
    tilt = float(rng.uniform(-0.12, 0.12))
    reach = 0.5 * length * (1 + 2 * FACE_LENGTH) + legs + body_height
    region = tuple(slice(int(np.clip(np.floor(coordinate - reach), 0, side)),
                         int(np.clip(np.ceil(coordinate + reach) + 1, 0, side)))
                   for coordinate, side in zip(centre, (height, width), strict=True))
    frame = frame_over(region, centre, tilt)
    along, across = frame.along * facing, frame.across
    body = _superellipse(along / (length / 2), across / (body_height / 2), build.squareness)
    limbs = _limbs(build, along, across, length, body_height, legs)
    area = canvas[region]
    shading = (rng.uniform(0.85, 1.1) * (1 - 0.25 * np.clip(across / body_height, -0.5, 0.5)))[..., None]
    coat = _coat(build.coat, along, across, min(height, width), rng) * shading
    area[limbs] = coat[limbs] * 0.8
    area[body] = coat[body]
    mask = body | limbs
    if style.face is not None:
        face_along = (along - length * (0.5 + 0.15 * FACE_LENGTH)) / (FACE_LENGTH * length / 2)
        face_across = (across + 0.2 * body_height) / (0.36 * body_height)
        face = np.hypot(face_along, face_across) <= 1
        area[face] = _face_colours(style.face, face_along[face], face_across[face])
        mask = mask | face
    placed = np.zeros((height, width), bool)
    placed[region] = mask
    return placed


def _superellipse(along: np.ndarray, across: np.ndarray, exponent: float) -> np.ndarray:
    return np.abs(along) ** exponent + np.abs(across) ** exponent <= 1


def _limbs(build: Build, along: np.ndarray, across: np.ndarray, length: float, body_height: float,
           legs: float) -> np.ndarray:
    """What the body stands on, below it (image rows grow downwards: `across` > 0 is below the axis)."""
    below = (across > 0) & (across <= body_height / 2 + legs)
    if build.kind == "four legs":
        half_width = 0.06 * length
        return below & np.logical_or.reduce([np.abs(along - offset * length) <= half_width
                                             for offset in (-0.38, -0.24, 0.24, 0.38)])
    if build.kind == "two wheels":
        radius = body_height / 2 * 0.5 + legs / 2
        wheels = [np.hypot(along - offset * length, across - body_height / 2) <= radius for offset in (-0.3, 0.3)]
        return np.logical_or.reduce(wheels)
    return below & (np.abs(along) <= 0.42 * length)


def _coat(coat: Texture, along: np.ndarray, across: np.ndarray, short_side: int,
          rng: np.random.Generator) -> np.ndarray:
    """The family's coat over the region, (h, w, 3) in [0, 1], in the animal's axes."""
    period = coat.period * short_side / REFERENCE_SHORT_SIDE
    if coat.kind == "patches":
        weight = smooth_noise(rng, along.shape, max(3, int(max(along.shape) / (3 * period))), channels=1)[..., 0] > 0.6
    elif coat.kind == "dapple":
        row_shift = 0.5 * np.floor(along / period)
        weight = np.hypot((along / period) % 1 - 0.5, (across / period + row_shift) % 1 - 0.5) < 0.28
    elif coat.kind == "bands":
        weight = (across / period) % 1 < 0.4
    else:
        grain = smooth_noise(rng, along.shape, max(3, int(max(along.shape) / (0.5 * period))), channels=1)[..., 0]
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * (along / (3 * period) + grain))
    first, second = (np.asarray(colour, np.float32) for colour in coat.colours)
    return first + np.asarray(weight, np.float32)[..., None] * (second - first)


def _face_colours(face: Texture, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """The face: its main colour, with its mark in the partner colour; coordinates are over the face's radii."""
    if face.kind == "eyes":
        mark = np.minimum(np.hypot(along - 0.2, across + 0.35), np.hypot(along - 0.2, across - 0.35)) < 0.22
    elif face.kind == "blaze":
        mark = np.abs(across) < 0.22
    elif face.kind == "muzzle":
        mark = along > 0.35
    else:
        mark = (across < -0.05) & (np.abs(along) < 0.75)
    first, second = (np.asarray(colour, np.float32) for colour in face.colours)
    return np.where(mark[..., None], second, first)


def _family_build(rng: np.random.Generator, family: int, num_families: int) -> Build:
    # One hue per family, evenly spaced; coats as saturated as a brown cow or a red bus, below the faces'.
    base = hsv(family / num_families + 0.1, rng.uniform(0.35, 0.6), rng.uniform(0.5, 0.85))
    partner = tuple(channel * rng.uniform(0.45, 0.7) for channel in base)
    coat = Texture(COATS[family % len(COATS)], (base, partner), float(rng.uniform(4.0, 8.0)))
    kind = BUILDS[family % len(BUILDS)]
    return Build(kind, aspect=float(rng.uniform(0.38, 0.6)), squareness=float(rng.choice([2.0, 2.5, 3.5, 5.0])),
                 leg_length=float(rng.uniform(0.5, 0.9) if kind == "four legs" else rng.uniform(0.15, 0.3)),
                 coat=coat)


def _face(index: int) -> Texture:
    # Golden-ratio hue steps put the faces of a family's members (neighbouring indices) far apart; the mark
    # and its colour change with the index too, so no two of 20 classes share a face.
    partner = hsv(0, 0, 0.95) if (index // len(FACE_MARKS)) % 2 else hsv(0, 0, 0.1)
    return Texture(FACE_MARKS[index % len(FACE_MARKS)], (hsv(index * 0.618033988749895, 0.85, 0.95), partner), 0)


def _faceless(rng: np.random.Generator, styles: list[HerdStyle]) -> HerdStyle:
    """A class-free animal: a family's build and coat, no face (or a muted one)."""
    build = styles[rng.integers(len(styles))].build
    if rng.random() < 0.5:
        return HerdStyle(build, None)
    mark = FACE_MARKS[rng.integers(len(FACE_MARKS))]
    return HerdStyle(build, Texture(mark, (muted_colour(rng), muted_colour(rng)), 0))


def _pasture(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, float]:
    """Hills under a hazy sky over a horizon at 25-50 % of the height, grass below with bushes and stones."""
    horizon = float(height * rng.uniform(0.25, 0.5))
    rows = np.arange(height, dtype=np.float32)[:, None] * np.ones((1, width), np.float32)
    hills = horizon - height * 0.08 * smooth_noise(rng, (1, width), int(rng.integers(2, 5)), channels=1)[0, :, 0]
    sky = np.asarray(hsv(rng.uniform(0.52, 0.62), rng.uniform(0.1, 0.3), rng.uniform(0.7, 0.9)), np.float32)
    grass = np.asarray(hsv(rng.uniform(0.15, 0.3), rng.uniform(0.2, 0.4), rng.uniform(0.35, 0.6)), np.float32)
    far = np.asarray(hsv(rng.uniform(0.2, 0.35), rng.uniform(0.1, 0.25), rng.uniform(0.45, 0.65)), np.float32)
    tufts = smooth_noise(rng, (height, width), int(rng.integers(30, 60)), channels=1)[..., 0]
    depth = np.clip((rows - horizon) / max(height - horizon, 1.0), 0, 1)[..., None]
    ground = (far + depth * (grass - far)) * (0.85 + 0.3 * tufts[..., None])
    canvas = np.where((rows < hills[None, :])[..., None], sky * (0.95 + 0.1 * tufts[..., None]), ground)
    for _ in range(int(rng.integers(2, 7))):
        _add_bush(canvas, rng, horizon)
    return canvas.astype(np.float32), horizon


def _add_bush(canvas: np.ndarray, rng: np.random.Generator, horizon: float) -> None:
    """A bush or stone: a muted lumpy blob resting on the ground."""
    height, width = canvas.shape[:2]
    row = rng.uniform(horizon, height)
    radius = _body_length(height, width, horizon, row) * rng.uniform(0.2, 0.5)
    centre = (row - radius * 0.5, rng.uniform(0, width))
    region = tuple(slice(int(np.clip(coordinate - 2 * radius, 0, side)), int(np.clip(coordinate + 2 * radius, 0, side)))
                   for coordinate, side in zip(centre, (height, width), strict=True))
    frame = frame_over(region, centre, 0.0)
    lumps = smooth_noise(rng, frame.along.shape, 4, channels=1)[..., 0]
    inside = np.hypot(frame.along, frame.across * 1.4) <= radius * (0.8 + 0.5 * lumps)
    canvas[region][inside] = np.asarray(muted_colour(rng), np.float32) * (0.8 + 0.3 * lumps[inside, None])
