"""Instances from semantic masks in COCO's format, read back with pycocotools, COCO's own reader."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wsseg.serving.instances import coco_document, encode_rle, mask_instances

mask_api = pytest.importorskip("pycocotools.mask")


def label_map() -> np.ndarray:
    """Background with two separate squares of class 3, an L of class 5 touching one diagonally, and 255."""
    labels = np.zeros((40, 50), np.uint8)
    labels[2:10, 3:11] = 3
    labels[20:30, 30:45] = 3
    labels[10:18, 11:13] = 5  # touches the first square at a corner only: a region of its own class
    labels[16:18, 11:20] = 5
    labels[35:40, 0:50] = 255
    return labels


@pytest.mark.parametrize("case", ["empty", "full", "first_pixel", "random", "long_runs"])
def test_rle_decodes_with_pycocotools_to_the_same_mask(case):
    rng = np.random.default_rng(0)
    mask = {"empty": np.zeros((7, 9), bool), "full": np.ones((7, 9), bool),
            "first_pixel": np.eye(6, 11, dtype=bool), "random": rng.random((33, 47)) > 0.6,
            # runs of thousands of pixels and runs shorter than the one two before: multi-character, negative deltas
            "long_runs": np.repeat(rng.random((1, 300)) > 0.5, 97, axis=0)}[case]
    rle = encode_rle(mask)
    decoded = mask_api.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(decoded.astype(bool), mask)
    assert rle == {"size": list(mask.shape),
                   "counts": mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()}


def test_each_connected_region_of_a_class_is_one_instance_with_its_box_and_area():
    instances = mask_instances(label_map())
    assert sorted((item["category_id"], tuple(item["bbox"]), item["area"]) for item in instances) == [
        (3, (3, 2, 8, 8), 64), (3, (30, 20, 15, 10), 150), (5, (11, 10, 9, 8), 16 + 14)]
    assert all(item["iscrowd"] == 0 for item in instances)
    assert len(mask_instances(label_map(), min_area=64)) == 2


def test_a_coco_document_of_two_images_loads_in_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    labels = label_map()
    names = ["background", "a", "b", "square", "d", "ell"]
    images = [dict(image_id="dir/one", file_name="dir/one.jpg", height=40, width=50),
              dict(image_id="two", file_name="two.png", height=40, width=50)]
    document = coco_document(images, {"dir/one": mask_instances(labels), "two": mask_instances(labels == 5)},
                             names)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(document))

    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [1, 2] and coco.imgs[1]["file_name"] == "dir/one.jpg"
    assert [category["name"] for category in coco.loadCats(coco.getCatIds())] == names[1:]
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(annotations) == 3
    for annotation in annotations:
        region = coco.annToMask(annotation).astype(bool)
        assert (labels[region] == annotation["category_id"]).all()
        assert region.sum() == annotation["area"]
        assert mask_api.toBbox(coco.annToRLE(annotation)).tolist() == annotation["bbox"]
    assert [annotation["category_id"] for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[2]))] == [1]
