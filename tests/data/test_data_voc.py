"""Reading a VOC 2012-layout folder written by hand, the way VOC itself ships it."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsseg.classes import VOC_CLASSES, ClassList, voc_palette
from wsseg.data import ObjectAnnotation, load_samples, read_image, read_mask
from wsseg.errors import DataError

DOG_AND_PEOPLE_XML = """<annotation>
  <folder>VOC2012</folder>
  <filename>2008_000001.jpg</filename>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <segmented>1</segmented>
  <object>
    <name>dog</name>
    <pose>Left</pose>
    <truncated>1</truncated>
    <difficult>0</difficult>
    <bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>25</ymax></bndbox>
  </object>
  <object>
    <name>person</name>
    <truncated>0</truncated>
    <difficult>1</difficult>
    <bndbox><xmin>21</xmin><ymin>1</ymin><xmax>39.0</xmax><ymax>30</ymax></bndbox>
    <part><name>head</name><bndbox><xmin>25</xmin><ymin>1</ymin><xmax>30</xmax><ymax>6</ymax></bndbox></part>
    <part><name>hand</name><bndbox><xmin>22</xmin><ymin>10</ymin><xmax>24</xmax><ymax>12</ymax></bndbox></part>
  </object>
  <object>
    <name>person</name>
    <bndbox><xmin>30</xmin><ymin>5</ymin><xmax>38</xmax><ymax>28</ymax></bndbox>
  </object>
</annotation>
"""

CAR_XML = """<annotation>
  <filename>2008_000002.jpg</filename>
  <object><name> car </name><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object>
</annotation>
"""


def write_jpeg(path: Path, height: int = 30, width: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def write_palette_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    png = Image.fromarray(mask.astype(np.uint8))
    png.putpalette(voc_palette())
    png.save(path)


@pytest.fixture
def hand_voc(tmp_path) -> Path:
    root = tmp_path / "VOC2012"
    write_jpeg(root / "JPEGImages" / "2008_000001.jpg")
    write_jpeg(root / "JPEGImages" / "2008_000002.jpg")
    (root / "Annotations").mkdir()
    (root / "Annotations" / "2008_000001.xml").write_text(DOG_AND_PEOPLE_XML)
    (root / "Annotations" / "2008_000002.xml").write_text(CAR_XML)
    mask = np.zeros((30, 40), np.uint8)
    mask[3:25, 2:20] = 12
    mask[1:30, 21:39] = 15
    mask[3, 2:20] = 255
    write_palette_png(root / "SegmentationClass" / "2008_000001.png", mask)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2008_000001\n2008_000002\n\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2008_000002\n")
    return root


def test_labels_come_from_object_names_sorted_and_without_repeats(hand_voc):
    samples = load_samples(hand_voc, "train", ClassList(VOC_CLASSES))
    assert [sample.image_id for sample in samples] == ["2008_000001", "2008_000002"]
    assert samples[0].labels == (VOC_CLASSES.index("dog"), VOC_CLASSES.index("person"))
    assert samples[1].labels == (VOC_CLASSES.index("car"),)


def test_objects_keep_flags_and_boxes_and_person_parts_are_not_objects(hand_voc):
    dog, person, other_person = load_samples(hand_voc, "train")[0].objects
    assert dog == ObjectAnnotation("dog", difficult=False, truncated=True, bbox=(2, 3, 20, 25))
    assert person == ObjectAnnotation("person", difficult=True, truncated=False, bbox=(21, 1, 39, 30))
    assert other_person == ObjectAnnotation("person", bbox=(30, 5, 38, 28))


def test_mask_path_only_where_segmentation_class_has_one_and_mask_reads_as_indices(hand_voc):
    with_mask, without_mask = load_samples(hand_voc, "train")
    assert without_mask.mask_path is None
    mask = read_mask(with_mask.mask_path)
    assert mask.shape == (30, 40) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 12, 15, 255}
    assert Image.open(with_mask.mask_path).mode == "P"


def test_read_image_gives_rgb_uint8(hand_voc):
    image = read_image(hand_voc / "JPEGImages" / "2008_000001.jpg")
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8


def test_split_lists_fall_back_to_image_sets_main(hand_voc):
    (hand_voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    (hand_voc / "ImageSets" / "Main").mkdir()
    (hand_voc / "ImageSets" / "Main" / "val.txt").write_text("2008_000001\n")
    assert [sample.image_id for sample in load_samples(hand_voc, "val")] == ["2008_000001"]


def test_unknown_class_name_names_the_xml_file_and_the_name(hand_voc):
    xml = hand_voc / "Annotations" / "2008_000002.xml"
    xml.write_text(CAR_XML.replace(" car ", "spaceship"))
    with pytest.raises(DataError, match="spaceship") as caught:
        load_samples(hand_voc, "train")
    assert caught.value.path == str(xml)


def test_a_class_list_from_configuration_decides_what_is_known(hand_voc):
    classes = ClassList(("background", "person", "dog", "car"))
    assert [sample.labels for sample in load_samples(hand_voc, "train", classes)] == [(1, 2), (3,)]
    with pytest.raises(DataError, match="'car'"):
        load_samples(hand_voc, "train", ClassList(("background", "person", "dog")))


def test_missing_split_list_annotation_or_image_is_a_data_error(hand_voc):
    with pytest.raises(DataError, match="test"):
        load_samples(hand_voc, "test")
    (hand_voc / "Annotations" / "2008_000002.xml").unlink()
    with pytest.raises(DataError, match="annotation not found"):
        load_samples(hand_voc, "val")
    (hand_voc / "JPEGImages" / "2008_000002.jpg").unlink()
    with pytest.raises(DataError, match="2008_000002"):
        load_samples(hand_voc, "val")


def test_a_folder_that_is_no_dataset_says_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="JPEGImages"):
        load_samples(tmp_path, "train")


def test_truncated_jpeg_and_colour_mask_are_data_errors_naming_the_file(tmp_path):
    jpeg = tmp_path / "cut.jpg"
    write_jpeg(jpeg, 64, 64)
    jpeg.write_bytes(jpeg.read_bytes()[:-200])
    with pytest.raises(DataError) as caught:
        read_image(jpeg)
    assert caught.value.path == str(jpeg)
    colour = tmp_path / "colour.png"
    Image.new("RGB", (4, 4)).save(colour)
    with pytest.raises(DataError, match="palette"):
        read_mask(colour)
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "absent.jpg")


def test_a_file_that_is_no_image_is_named_as_such_without_pythons_buffer_object(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")

    with pytest.raises(DataError, match="not in an image format") as caught:
        read_image(text)

    assert caught.value.path == str(text)
    assert "BytesIO" not in str(caught.value) and " object at 0x" not in str(caught.value)


def test_a_shard_of_a_folder_in_a_store_reads_the_annotations_of_its_slice_alone(tiny_voc, s3_env):
    from wsseg.runtime.shards import Shard
    from wsseg.store import open_store
    from wsseg.store.traffic import since, traffic

    stored = open_store(s3_env).child("data")
    for path in tiny_voc.rglob("*"):
        if path.is_file():
            stored.put_file(str(path.relative_to(tiny_voc)), path)
    train_ids = (tiny_voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    shard = Shard(1, 3)
    before = traffic()
    samples = load_samples(stored.uri, "train", keep=shard.holds)
    read = since(before)
    slice_ids = [image_id for image_id in train_ids if shard.holds(image_id)]
    assert 0 < len(slice_ids) < len(train_ids)
    assert [sample.image_id for sample in samples] == slice_ids
    assert samples == [sample for sample in load_samples(stored.uri, "train") if shard.holds(sample.image_id)]
    # The split's list, then one annotation per image of the slice; images and masks are only listed.
    assert read["gets"] == 1 + len(slice_ids)
