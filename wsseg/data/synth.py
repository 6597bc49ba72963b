"""`make_synthetic_voc`: a small dataset in the VOC 2012 layout that stands in for photos in tests and demos.

Three constructions share one VOC writer. "shapes" (tune on it): square, cluttered backgrounds with 1-3
classes and 1-4 textured bodies each, drawn as `synth_look` describes. "figures" and "herds" (report on them,
never tune on them), at VOC's image sizes: articulated figures on outdoor scenes (`synth_figures`), and herds of
animals whose classes come in look-alike families that differ in the face alone (`synth_herds`).
The output is read by the ordinary VOC reader; there is no synthetic-only code path.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from PIL import Image

from wsseg.classes import IGNORE_INDEX, VOC_CLASSES, ClassList, voc_palette
from wsseg.data.samples import ObjectAnnotation
from wsseg.data.synth_figures import draw_figure_scene, figure_styles
from wsseg.data.synth_herds import draw_herd_scene, herd_styles
from wsseg.data.synth_look import (
    MAX_OUTLINE_RADIUS,
    ClassStyle,
    Frame,
    Shape,
    class_styles,
    distractor_texture,
    finish_image,
    muted_colour,
    paint_texture,
    pick_object_classes,
    pixel_grid,
    random_shape,
    region_around,
    shape_mask,
    smooth_noise,
)
from wsseg.errors import ConfigError

STYLES = ("shapes", "figures", "herds")
SHAPES_SIZE = 128
# Body texture periods are in pixels of a 128 px image.
REFERENCE_SIZE = 128
RADIUS_RANGE = (0.10, 0.30)             # object major radius as a fraction of the image side
CLUTTER_RADIUS_RANGE = (0.05, 0.30)
KEY_PART_RADIUS = 0.4                   # key part radius over body radius: about a sixth of the body's area
JPEG_QUALITY = 90
LAYOUT_FOLDERS = ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject",
                  "ImageSets/Segmentation", "ImageSets/Main")

# What a scene renderer draws: the image, then a mask and a class per figure in drawing order (later ones
# occlude earlier ones); class 0 marks a class-free figure, whose pixels are background.
Drawing = tuple[np.ndarray, list[np.ndarray], list[int]]


@dataclass(frozen=True)
class Scene:
    image: np.ndarray                   # (H, W, 3) uint8
    class_mask: np.ndarray              # (H, W) uint8 class indices, 255 on boundaries and unlabelled slivers
    instance_mask: np.ndarray           # (H, W) uint8 object numbers 1..n, 255 likewise
    objects: tuple[ObjectAnnotation, ...]


def make_synthetic_voc(out: str | Path, train: int, val: int, seed: int, size: int | None = None,
                       classes: ClassList | tuple[str, ...] = VOC_CLASSES, style: str = "shapes") -> Path:
    """Write `train` + `val` images with annotations, masks and split lists under `out`; returns `out`.
    `size` is the image side of the shapes style (default 128); figures images take VOC's sizes."""
    out, classes = Path(out), classes if isinstance(classes, ClassList) else ClassList(classes)
    draw = scene_renderer(style, size, len(classes) - 1)
    for folder in LAYOUT_FOLDERS:
        (out / folder).mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    split_ids = {"train": [], "val": []}
    for index in range(train + val):
        image_id = f"{index:06d}"
        # One generator per image: an image does not depend on how many came before it.
        scene = render_scene(np.random.default_rng([seed, index]), draw, classes)
        _write_sample(out, image_id, scene, palette)
        split_ids["train" if index < train else "val"].append(image_id)
    split_ids["trainval"] = split_ids["train"] + split_ids["val"]
    for folder in ("ImageSets/Segmentation", "ImageSets/Main"):
        for split, ids in split_ids.items():
            (out / folder / f"{split}.txt").write_text("".join(f"{image_id}\n" for image_id in ids))
    return out


def scene_renderer(style: str, size: int | None, num_foreground: int) -> Callable[[np.random.Generator], Drawing]:
    """What draws one scene of `style`; options that do not fit the style are refused before any file is written."""
    if style == "shapes":
        size = SHAPES_SIZE if size is None else size
        return partial(draw_shapes_scene, size=size, styles=class_styles(num_foreground))
    if style == "figures":
        if size is not None:
            raise ConfigError("--size applies to the shapes style only: figures images take VOC's sizes")
        return partial(draw_figure_scene, styles=figure_styles(num_foreground))
    if style == "herds":
        if size is not None:
            raise ConfigError("--size applies to the shapes style only: herds images take VOC's sizes")
        return partial(draw_herd_scene, styles=herd_styles(num_foreground))
    raise ConfigError(f"--style {style!r} is unknown; known: {', '.join(STYLES)}")


def render_scene(rng: np.random.Generator, draw: Callable[[np.random.Generator], Drawing],
                 classes: ClassList) -> Scene:
    """A scene with at least one visible object (a scene whose objects all hide is drawn again)."""
    while True:
        scene = _annotate(*draw(rng), classes)
        if scene.objects:
            return scene


def draw_shapes_scene(rng: np.random.Generator, size: int, styles: list[ClassStyle]) -> Drawing:
    canvas = _background(rng, size)
    object_classes = pick_object_classes(rng, len(styles))
    bodies = [_draw_object(canvas, rng, styles[class_index - 1], size) for class_index in object_classes]
    return finish_image(canvas, rng), bodies, object_classes


def boundary_band(instances: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within `radius` of a pixel of another instance: VOC's void outline around every object."""
    height, width = instances.shape
    padded = np.pad(instances, radius, mode="edge")
    band = np.zeros(instances.shape, bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            band |= padded[radius + dy:radius + dy + height, radius + dx:radius + dx + width] != instances
    return band


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth gradient with grey and faint colour noise, clutter shapes and class-free distractors."""
    rows, cols = pixel_grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = cols * np.cos(angle) + rows * np.sin(angle)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    start, end = (np.asarray(muted_colour(rng), np.float32) for _ in range(2))
    canvas = start + ramp[..., None] * (end - start)
    canvas += (smooth_noise(rng, (size, size), int(rng.integers(3, 9)), channels=1) - 0.5) * 0.3
    canvas += (smooth_noise(rng, (size, size), int(rng.integers(3, 9))) - 0.5) * 0.08
    for _ in range(int(rng.integers(3, 9))):
        frame, mask, _ = _place_shape(rng, size, random_shape(rng), CLUTTER_RADIUS_RANGE)
        region = canvas[frame.region]
        region[mask] += rng.uniform(0.4, 1.0) * (np.asarray(muted_colour(rng), np.float32) - region[mask])
    # Distractors wear the bodies' patterns without a key part: a pattern alone does not name a class.
    for _ in range(int(rng.integers(1, 4))):
        frame, mask, _ = _place_shape(rng, size, random_shape(rng), RADIUS_RANGE)
        texture = distractor_texture(rng)
        canvas[frame.region][mask] = paint_texture(texture, frame, size / REFERENCE_SIZE, rng)[mask]
    return canvas


def _draw_object(canvas: np.ndarray, rng: np.random.Generator, style: ClassStyle, size: int) -> np.ndarray:
    """Paint one object (body, then key part) onto `canvas`; returns its body mask over the image."""
    frame, body, radius = _place_shape(rng, size, style.body_shape, RADIUS_RANGE, phase_range=0.3)
    region = canvas[frame.region]
    shading = rng.uniform(0.8, 1.15) * (1 + 0.15 * frame.along / radius)[..., None]
    region[body] = (paint_texture(style.body_texture, frame, size / REFERENCE_SIZE, rng) * shading)[body]
    key_frame, key_radius = _key_part_frame(rng, frame, radius, style.body_shape.aspect, size)
    key = body & (key_frame.distance() <= key_radius)
    region[key] = paint_texture(style.key_texture, key_frame, key_radius, rng)[key]
    return frame.full_image(body, size)


def _key_part_frame(rng: np.random.Generator, body: Frame, radius: float, aspect: float,
                    size: int) -> tuple[Frame, float]:
    """The key part sits about halfway out from the body's centre in a random direction, like a head."""
    direction = rng.uniform(0, 2 * np.pi)
    centre = body.point(0.45 * radius * np.cos(direction), 0.45 * radius * aspect * np.sin(direction))
    key_radius = max(2.0, KEY_PART_RADIUS * radius * float(np.sqrt(aspect)))
    return Frame.at(size, centre, rng.uniform(0, 2 * np.pi), body.region), key_radius


def _place_shape(rng: np.random.Generator, size: int, shape: Shape, radius_range: tuple[float, float],
                 phase_range: float = np.pi) -> tuple[Frame, np.ndarray, float]:
    """A shape at a random centre, angle and log-uniform radius (small and large equally common, as
    scales are in photos); centres may fall just outside, giving truncated objects as in VOC."""
    radius = float(size * np.exp(rng.uniform(*np.log(radius_range))))
    centre = tuple(float(coordinate) for coordinate in rng.uniform(-0.05, 1.05, size=2) * size)
    region = region_around(size, centre, MAX_OUTLINE_RADIUS * radius)
    frame = Frame.at(size, centre, rng.uniform(0, 2 * np.pi), region)
    return frame, shape_mask(shape, frame, radius, rng.uniform(-phase_range, phase_range)), radius


def _annotate(image: np.ndarray, bodies: list[np.ndarray], body_classes: list[int],
              classes: ClassList) -> Scene:
    """Annotations and masks of what stays visible; later bodies occlude earlier ones, and class-free (0)
    bodies occlude as well but stay background."""
    size = min(image.shape[:2])     # thresholds scale with the short side, the side pipelines resize to
    instances = np.zeros(image.shape[:2], np.int32)
    for number, body in enumerate(bodies, start=1):
        instances[body] = number
    class_mask = np.zeros_like(instances)
    objects, sliver = [], -1
    for number, (body, class_index) in enumerate(zip(bodies, body_classes, strict=True), start=1):
        visible = instances == number
        if not class_index:
            instances[visible] = 0
            continue
        if visible.sum() < max(6, (0.04 * size) ** 2):
            instances[visible] = sliver     # too little left to name: void, neither object nor background
            class_mask[visible] = IGNORE_INDEX
            continue
        class_mask[visible] = class_index
        objects.append(_object_annotation(classes.names[class_index], body, visible))
    band = boundary_band(instances, radius=max(1, round(size / 256)))
    renumbered = _renumber(instances)
    class_mask[band], renumbered[band] = IGNORE_INDEX, IGNORE_INDEX
    return Scene(image, class_mask.astype(np.uint8), renumbered.astype(np.uint8), tuple(objects))


def _object_annotation(name: str, body: np.ndarray, visible: np.ndarray) -> ObjectAnnotation:
    rows, cols = np.nonzero(visible)
    size = min(body.shape)
    truncated = bool(body[0].any() or body[-1].any() or body[:, 0].any() or body[:, -1].any())
    # VOC marks objects hard to recognise without context; mostly hidden or tiny ones stand in for those.
    difficult = bool(visible.sum() < 0.3 * body.sum() or visible.sum() < (0.08 * size) ** 2)
    bbox = (int(cols.min()) + 1, int(rows.min()) + 1, int(cols.max()) + 1, int(rows.max()) + 1)
    return ObjectAnnotation(name, difficult=difficult, truncated=truncated, bbox=bbox)


def _renumber(instances: np.ndarray) -> np.ndarray:
    """Visible objects numbered 1..n in drawing order, slivers 255, background 0."""
    numbers = np.unique(instances[instances > 0])
    lookup = np.zeros(int(instances.max(initial=0)) + 1, np.int32)
    lookup[numbers] = np.arange(1, len(numbers) + 1)
    return np.where(instances > 0, lookup[np.maximum(instances, 0)], np.where(instances < 0, IGNORE_INDEX, 0))


def _write_sample(out: Path, image_id: str, scene: Scene, palette: list[int]) -> None:
    Image.fromarray(scene.image).save(out / "JPEGImages" / f"{image_id}.jpg", quality=JPEG_QUALITY)
    for folder, mask in (("SegmentationClass", scene.class_mask), ("SegmentationObject", scene.instance_mask)):
        png = Image.fromarray(mask)
        png.putpalette(palette)
        png.save(out / folder / f"{image_id}.png")
    _annotation_tree(image_id, scene).write(out / "Annotations" / f"{image_id}.xml", encoding="unicode")


def _annotation_tree(image_id: str, scene: Scene) -> ElementTree.ElementTree:
    root = ElementTree.Element("annotation")
    height, width = scene.image.shape[:2]
    _add(root, folder="VOC2012", filename=f"{image_id}.jpg")
    _add(ElementTree.SubElement(root, "source"), database="wsseg synthetic")
    _add(ElementTree.SubElement(root, "size"), width=width, height=height, depth=3)
    _add(root, segmented=1)
    for obj in scene.objects:
        element = ElementTree.SubElement(root, "object")
        _add(element, name=obj.name, pose="Unspecified", truncated=int(obj.truncated), difficult=int(obj.difficult))
        corners = dict(zip(("xmin", "ymin", "xmax", "ymax"), obj.bbox, strict=True))
        _add(ElementTree.SubElement(element, "bndbox"), **corners)
    tree = ElementTree.ElementTree(root)
    ElementTree.indent(tree)
    return tree


def _add(parent: ElementTree.Element, **children) -> None:
    for tag, value in children.items():
        ElementTree.SubElement(parent, tag).text = str(value)
