"""The synthetic VOC stand-in: deterministic, read by the ordinary reader, and shaped like photos."""
import colorsys
import itertools
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from wsseg.classes import IGNORE_INDEX
from wsseg.data import load_samples, make_synthetic_voc, read_image, read_mask
from wsseg.data.synth_look import class_styles


def all_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def synth_128(tmp_path_factory) -> Path:
    return make_synthetic_voc(tmp_path_factory.mktemp("synth_128"), train=30, val=10, seed=7, size=128)


def test_same_seed_gives_the_same_bytes_and_another_seed_other_images(tmp_path):
    first = all_files(make_synthetic_voc(tmp_path / "a", train=4, val=2, seed=5, size=64))
    again = all_files(make_synthetic_voc(tmp_path / "b", train=4, val=2, seed=5, size=64))
    other = all_files(make_synthetic_voc(tmp_path / "c", train=4, val=2, seed=6, size=64))
    assert first == again
    assert first.keys() == other.keys()
    jpegs = [name for name in first if name.endswith(".jpg")]
    assert all(first[name] != other[name] for name in jpegs)


def test_tiny_voc_fixture_reads_with_the_voc_reader(tiny_voc):
    train, val = load_samples(tiny_voc, "train"), load_samples(tiny_voc, "val")
    assert (len(train), len(val)) == (12, 6)
    assert not {s.image_id for s in train} & {s.image_id for s in val}
    sample = val[0]
    assert read_image(sample.image_path).shape == (64, 64, 3)
    assert read_mask(sample.mask_path).shape == (64, 64)
    assert (tiny_voc / "SegmentationObject" / f"{sample.image_id}.png").is_file()
    assert (tiny_voc / "ImageSets" / "Main" / "train.txt").read_text().split() == [s.image_id for s in train]


def test_labels_match_the_classes_in_the_mask_and_images_hold_several(synth_128):
    samples = load_samples(synth_128, "train") + load_samples(synth_128, "val")
    for sample in samples:
        in_mask = set(np.unique(read_mask(sample.mask_path))) - {0, IGNORE_INDEX}
        assert set(sample.labels) == in_mask, sample.image_id
        assert len(sample.labels) in (1, 2, 3) and len(sample.objects) in (1, 2, 3, 4)
    assert sum(len(sample.labels) >= 2 for sample in samples) >= 0.3 * len(samples)
    assert len({label for sample in samples for label in sample.labels}) >= 10


def test_objects_are_outlined_by_a_thin_ignore_band(synth_128):
    for sample in load_samples(synth_128, "train")[:10]:
        mask = read_mask(sample.mask_path).astype(int)
        assert (mask == IGNORE_INDEX).any()
        # Nowhere does an object pixel touch a background pixel or another class directly.
        for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):
            touching = (a != b) & (a != IGNORE_INDEX) & (b != IGNORE_INDEX)
            assert not touching.any(), sample.image_id
        assert (mask == IGNORE_INDEX).mean() < 0.2


def test_annotations_carry_boxes_and_flags_like_voc(synth_128):
    objects = [element for xml in (synth_128 / "Annotations").glob("*.xml")
               for element in ElementTree.parse(xml).getroot().iter("object")]
    flags = {tag: [element.findtext(tag) for element in objects] for tag in ("truncated", "difficult")}
    assert {"0", "1"} <= set(flags["truncated"])
    assert set(flags["difficult"]) <= {"0", "1"}
    for element in objects:
        xmin, ymin, xmax, ymax = (int(element.find("bndbox").findtext(side))
                                  for side in ("xmin", "ymin", "xmax", "ymax"))
        assert 0 < xmin <= xmax <= 128 and 0 < ymin <= ymax <= 128


def saturated(image: np.ndarray) -> np.ndarray:
    """Pixels of vivid colour: only key parts are drawn that way."""
    rgb = image.reshape(-1, 3) / 255.0
    hsv = np.array([colorsys.rgb_to_hsv(*pixel) for pixel in rgb]).reshape(*image.shape[:2], 3)
    return (hsv[..., 1] > 0.6) & (hsv[..., 2] > 0.6)


def test_a_small_vivid_key_part_sits_on_objects_and_nowhere_else(synth_128):
    on_objects = off_objects = object_pixels = background_pixels = 0
    for sample in load_samples(synth_128, "val"):
        vivid, mask = saturated(read_image(sample.image_path)), read_mask(sample.mask_path)
        objects, background = (mask > 0) & (mask != IGNORE_INDEX), mask == 0
        on_objects, off_objects = on_objects + vivid[objects].sum(), off_objects + vivid[background].sum()
        object_pixels, background_pixels = object_pixels + objects.sum(), background_pixels + background.sum()
    assert 0.01 < on_objects / object_pixels < 0.25
    assert off_objects / background_pixels < 0.005


def test_classes_that_share_a_body_pattern_differ_in_hue_by_a_fifth_of_the_circle():
    styles = class_styles(20)
    hues = [colorsys.rgb_to_hsv(*style.body_texture.colours[0])[0] for style in styles]
    for first, second in itertools.combinations(range(20), 2):
        if styles[first].body_texture.kind == styles[second].body_texture.kind:
            gap = abs(hues[first] - hues[second])
            assert min(gap, 1 - gap) >= 0.2 - 1e-6, (first, second)
