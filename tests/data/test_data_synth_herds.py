"""The held-out "herds" construction: classes in look-alike families, several animals of a class per image."""
from functools import partial
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.cli import main
from wsseg.data import load_samples, make_synthetic_voc, read_image, read_mask
from wsseg.data.synth import render_scene
from wsseg.data.synth_herds import draw_herd_scene, family_of, herd_styles
from wsseg.errors import ConfigError

FEW_CLASSES = ("background", "ant", "bee", "cat", "dog")


@pytest.fixture(scope="module")
def herds_voc(tmp_path_factory) -> Path:
    return make_synthetic_voc(tmp_path_factory.mktemp("herds"), train=24, val=8, seed=4, style="herds")


def instances_of(root: Path, sample) -> tuple[np.ndarray, list[int]]:
    """The instance mask and each instance's class (read off the class mask under it)."""
    instances, classes = read_mask(root / "SegmentationObject" / f"{sample.image_id}.png"), read_mask(sample.mask_path)
    numbers = [number for number in np.unique(instances) if number not in (0, IGNORE_INDEX)]
    return instances, [int(np.bincount(classes[instances == number]).argmax()) for number in numbers]


def test_classes_come_in_families_that_share_a_build_and_differ_in_the_face():
    styles, families = herd_styles(20), family_of(20)
    assert sorted(set(families)) == list(range(max(families) + 1))
    assert sum(families.count(family) >= 2 for family in set(families)) >= 8
    for first in range(20):
        for second in range(first + 1, 20):
            same_family = families[first] == families[second]
            assert (styles[first].build == styles[second].build) == same_family
            assert styles[first].face != styles[second].face


def test_images_take_voc_sizes_and_labels_match_the_masks(herds_voc):
    samples = load_samples(herds_voc, "train") + load_samples(herds_voc, "val")
    assert len(samples) == 32
    for sample in samples:
        size = ElementTree.parse(herds_voc / "Annotations" / f"{sample.image_id}.xml").getroot().find("size")
        height, width = int(size.findtext("height")), int(size.findtext("width"))
        assert read_image(sample.image_path).shape == (height, width, 3)
        assert all(320 <= side <= 500 for side in (height, width))
        assert set(sample.labels) == set(np.unique(read_mask(sample.mask_path))) - {0, IGNORE_INDEX}


def test_herds_hold_several_animals_of_one_class_some_touching(herds_voc):
    crowded = touching = 0
    for sample in load_samples(herds_voc, "train"):
        instances, instance_classes = instances_of(herds_voc, sample)
        crowded += max(np.bincount(instance_classes)) >= 2
        # VOC's void band (255) separates touching objects; two instances of one class that both reach a void
        # pixel within two pixels of each other touch.
        void = instances == IGNORE_INDEX
        near = {number: np.zeros_like(void) for number in np.unique(instances) if number not in (0, IGNORE_INDEX)}
        for number in near:
            grown = instances == number
            for axis in (0, 1):
                for shift in (-2, -1, 1, 2):
                    grown = grown | np.roll(instances == number, shift, axis=axis)
            near[number] = grown & void
        touching += any((near[a] & near[b]).any() for a in near for b in near if a < b)
    assert crowded >= 0.4 * 24 and touching >= 0.2 * 24


def test_class_free_animals_are_background_in_the_masks():
    styles, classes = herd_styles(4), ClassList(FEW_CLASSES)
    distractor_pixels = labelled = 0
    for index in range(20):
        image, masks, animal_classes = draw_herd_scene(np.random.default_rng([5, index]), styles)
        scene = render_scene(np.random.default_rng([5, index]), partial(draw_herd_scene, styles=styles), classes)
        if not np.array_equal(scene.image, image):
            continue    # this scene's first draw hid every object and was drawn again
        in_front = np.zeros(image.shape[:2], bool)
        for mask, class_index in reversed(list(zip(masks, animal_classes, strict=True))):
            visible, in_front = mask & ~in_front, in_front | mask
            if class_index == 0:
                distractor_pixels += visible.sum()
                labelled += (~np.isin(scene.class_mask[visible], (0, IGNORE_INDEX))).sum()
    assert distractor_pixels > 0 and labelled == 0


def test_siblings_sometimes_share_an_image(herds_voc):
    families = family_of(20)
    together = sum(any(families[first - 1] == families[second - 1] for first in sample.labels
                       for second in sample.labels if first < second)
                   for sample in load_samples(herds_voc, "train"))
    assert together >= 1


def test_same_seed_gives_the_same_bytes(tmp_path):
    make = partial(make_synthetic_voc, train=2, val=1, classes=FEW_CLASSES, style="herds")
    first, again = (make(tmp_path / name, seed=5) for name in ("a", "b"))
    assert all((first / path.relative_to(again)).read_bytes() == path.read_bytes()
               for path in again.rglob("*") if path.is_file())


def test_wsseg_synth_herds_writes_a_dataset_that_data_check_passes_and_refuses_a_size(tmp_path, capsys):
    root = tmp_path / "herds"
    assert main(["synth", str(root), "--train", "4", "--val", "2", "--style", "herds"]) == 0
    assert "herds images of VOC's sizes" in capsys.readouterr().out
    assert main(["data", "check", str(root)]) == 0
    assert "problems: 0" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--size"):
        make_synthetic_voc(tmp_path / "sized", train=1, val=0, seed=0, size=64, style="herds")
