"""The held-out "figures" construction: VOC-sized outdoor scenes of articulated figures, read like VOC."""
import colorsys
from functools import partial
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from tests.data.test_data_check import count_from_xml, table_rows
from wsseg.classes import IGNORE_INDEX, VOC_CLASSES, ClassList
from wsseg.cli import main
from wsseg.data import load_samples, make_synthetic_voc, read_image, read_mask
from wsseg.data.synth import render_scene
from wsseg.data.synth_figures import draw_figure_scene, figure_styles
from wsseg.errors import ConfigError

FEW_CLASSES = ("background", "ant", "bee", "cat", "dog")


def all_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def hue_saturation_value(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = image.astype(np.float32) / 255
    value, low = rgb.max(axis=-1), rgb.min(axis=-1)
    spread = np.maximum(value - low, 1e-6)
    red, green, blue = (rgb[..., channel] for channel in range(3))
    hue = np.select([value == red, value == green], [(green - blue) / spread, 2 + (blue - red) / spread],
                    4 + (red - green) / spread) / 6 % 1
    return hue, (value - low) / np.maximum(value, 1e-6), value


def vivid(image: np.ndarray) -> np.ndarray:
    """Pixels of saturated, bright colour: only class heads are drawn that way."""
    _, saturation, value = hue_saturation_value(image)
    return (saturation > 0.6) & (value > 0.6)


def hue_gap(first, second):
    """Distance on the hue circle, for numbers or arrays."""
    gap = np.abs(np.asarray(first) - second) % 1
    return np.minimum(gap, 1 - gap)


@pytest.fixture(scope="module")
def figures_voc(tmp_path_factory) -> Path:
    return make_synthetic_voc(tmp_path_factory.mktemp("figures"), train=16, val=8, seed=11, style="figures")


def test_same_seed_gives_the_same_bytes_and_another_seed_other_images(tmp_path):
    make = partial(make_synthetic_voc, train=3, val=1, classes=FEW_CLASSES, style="figures")
    first, again, other = (all_files(make(tmp_path / name, seed=seed)) for name, seed in (("a", 5), ("b", 5), ("c", 6)))
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first if name.endswith(".jpg"))


def test_images_take_voc_sizes_in_both_orientations_and_annotations_state_them(figures_voc):
    shapes = []
    for xml in sorted((figures_voc / "Annotations").glob("*.xml")):
        size = ElementTree.parse(xml).getroot().find("size")
        width, height = int(size.findtext("width")), int(size.findtext("height"))
        assert read_image(figures_voc / "JPEGImages" / f"{xml.stem}.jpg").shape == (height, width, 3)
        assert read_mask(figures_voc / "SegmentationClass" / f"{xml.stem}.png").shape == (height, width)
        shapes.append((height, width))
    assert all(320 <= side <= 500 for shape in shapes for side in shape)
    assert any(width > height for height, width in shapes) and any(height > width for height, width in shapes)
    assert sum(500 in shape for shape in shapes) >= 0.6 * len(shapes)


def test_labels_match_the_classes_in_the_masks(figures_voc):
    samples = load_samples(figures_voc, "train") + load_samples(figures_voc, "val")
    assert len(samples) == 24
    for sample in samples:
        in_mask = set(np.unique(read_mask(sample.mask_path))) - {0, IGNORE_INDEX}
        assert set(sample.labels) == in_mask, sample.image_id
        assert len(sample.labels) in (1, 2, 3) and len(sample.objects) in (1, 2, 3, 4)
    assert sum(len(sample.labels) >= 2 for sample in samples) >= 0.3 * len(samples)


def object_heads(root: Path):
    """(annotation, object mask, pixels of its own head's colour in it) for every object of the train split."""
    styles, classes = figure_styles(20), ClassList(VOC_CLASSES)
    for sample in load_samples(root, "train"):
        hue, saturation, value = hue_saturation_value(read_image(sample.image_path))
        instances = read_mask(root / "SegmentationObject" / f"{sample.image_id}.png")
        for number, annotation in enumerate(sample.objects, start=1):
            head_colour = styles[classes.index(annotation.name) - 1].head.texture.colours[0]
            gap = hue_gap(hue, colorsys.rgb_to_hsv(*head_colour)[0])
            head_coloured = (gap < 0.04) & (saturation > 0.6) & (value > 0.6)
            yield annotation, instances == number, (instances == number) & head_coloured


def test_each_object_shows_its_head_inside_its_mask(figures_voc):
    shown = [head.sum() >= 4 for _, _, head in object_heads(figures_voc)]
    # A head may hide behind a later figure or leave the image; most show.
    assert sum(shown) >= 0.85 * len(shown)


def test_heads_sit_at_an_end_of_their_figure(figures_voc):
    positions = []
    for annotation, mask, head in object_heads(figures_voc):
        if annotation.truncated or head.sum() < 4:
            continue
        pixels = np.argwhere(mask).astype(np.float32)
        centre = pixels.mean(axis=0)
        axis = np.linalg.svd(pixels - centre, full_matrices=False)[2][0]
        along = (pixels - centre) @ axis
        head_along = (np.argwhere(head).mean(axis=0) - centre) @ axis
        positions.append(abs(2 * (head_along - along.min()) / (along.max() - along.min()) - 1))
    # 0 is the middle of the figure's span along its longest axis, 1 either end; a key part halfway out from the
    # centre, as the shapes look puts it, lies near 0.45.
    assert len(positions) >= 10
    assert np.mean(np.array(positions) > 0.6) >= 0.9


def test_masks_hold_whole_figures_with_heads_a_small_part_and_no_head_outside(figures_voc):
    head_pixels = object_pixels = background_heads = background_pixels = 0
    for sample in load_samples(figures_voc, "train"):
        heads, instances = vivid(read_image(sample.image_path)), read_mask(sample.mask_path)
        is_object, is_background = (instances > 0) & (instances != IGNORE_INDEX), instances == 0
        head_pixels, object_pixels = head_pixels + heads[is_object].sum(), object_pixels + is_object.sum()
        background_heads += heads[is_background].sum()
        background_pixels += is_background.sum()
    # The head's main colour covers about a tenth of a figure's mask: the mask is the whole figure.
    assert 0.03 < head_pixels / object_pixels < 0.2
    assert background_heads / background_pixels < 0.002


def test_the_classes_of_a_pair_share_a_body_but_not_a_head():
    styles = figure_styles(20)
    for first, second in zip(styles[0::2], styles[1::2], strict=True):
        assert first.body == second.body
        first_hue, second_hue = (colorsys.rgb_to_hsv(*style.head.texture.colours[0])[0] for style in (first, second))
        assert hue_gap(first_hue, second_hue) > 0.25
    body_colours = [style.body.texture.colours[0] for style in styles[0::2]]
    assert len(set(body_colours)) == 10
    assert all(colorsys.rgb_to_hsv(*colour)[1] < 0.6 for colour in body_colours)


def test_a_single_class_gets_a_dataset_of_its_own(tmp_path):
    root = make_synthetic_voc(tmp_path, train=3, val=0, seed=2, classes=("background", "solo"), style="figures")
    assert {sample.labels for sample in load_samples(root, "train", ClassList(("background", "solo")))} == {(1,)}


def test_distractor_figures_are_background_in_the_masks():
    styles, classes = figure_styles(4), ClassList(FEW_CLASSES)
    distractor_pixels = labelled = 0
    for index in range(10):
        image, masks, figure_classes = draw_figure_scene(np.random.default_rng([5, index]), styles)
        scene = render_scene(np.random.default_rng([5, index]), partial(draw_figure_scene, styles=styles), classes)
        if not np.array_equal(scene.image, image):
            continue    # this scene's first draw hid every object and was drawn again
        assert 0 in figure_classes
        in_front = np.zeros(image.shape[:2], bool)
        for mask, class_index in reversed(list(zip(masks, figure_classes, strict=True))):
            visible, in_front = mask & ~in_front, in_front | mask
            if class_index == 0:
                distractor_pixels += visible.sum()
                labelled += (~np.isin(scene.class_mask[visible], (0, IGNORE_INDEX))).sum()
                labelled += (~np.isin(scene.instance_mask[visible], (0, IGNORE_INDEX))).sum()
    assert distractor_pixels > 0 and labelled == 0


def test_wsseg_synth_figures_writes_a_dataset_that_data_check_passes(tmp_path, capsys):
    root = tmp_path / "figures"
    assert main(["synth", str(root), "--train", "6", "--val", "2", "--seed", "3", "--style", "figures"]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(root)]) == 0
    output = capsys.readouterr().out
    assert "images: train 6, val 2" in output
    assert "problems: 0" in output
    images, objects = count_from_xml(root)
    assert table_rows(output) == {name: (images[name], objects[name]) for name in VOC_CLASSES[1:]}


def test_a_size_for_the_figures_style_is_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--size"):
        make_synthetic_voc(tmp_path / "a", train=1, val=0, seed=0, size=64, style="figures")
    assert not (tmp_path / "a").exists()
    assert main(["synth", str(tmp_path / "b"), "--train", "1", "--val", "0", "--style", "figures",
                 "--size", "64"]) == 2
    assert "--size" in capsys.readouterr().err
