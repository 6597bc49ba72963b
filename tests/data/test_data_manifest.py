"""Manifests (.csv, .jsonl) for data that is not laid out as VOC."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsseg.classes import VOC_CLASSES
from wsseg.data import load_samples, read_mask
from wsseg.errors import DataError

CAT, DOG, PERSON = (VOC_CLASSES.index(name) for name in ("cat", "dog", "person"))


@pytest.fixture
def photos(tmp_path) -> Path:
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6), (120, 30, 200)).save(tmp_path / name)
    Image.fromarray(np.full((6, 8), CAT, np.uint8)).save(tmp_path / "a_mask.png")
    return tmp_path


def test_csv_manifest_with_semicolon_and_space_separated_labels(photos):
    manifest = photos / "data.csv"
    manifest.write_text("image,labels,mask\n"
                        "a.jpg,cat;dog,a_mask.png\n"
                        "sub/c.jpg,person dog,\n")
    first, second = load_samples(manifest, "train")
    assert (first.image_id, first.labels, first.image_path) == ("a", (CAT, DOG), photos / "a.jpg")
    assert read_mask(first.mask_path)[0, 0] == CAT
    assert (second.image_id, second.labels, second.mask_path) == ("c", (DOG, PERSON), None)
    assert second.image_path == photos / "sub" / "c.jpg"


def test_jsonl_manifest_with_split_field(photos):
    manifest = photos / "data.jsonl"
    rows = [{"image": "a.jpg", "labels": ["cat"], "mask": "a_mask.png", "split": "val"},
            {"image": "b.jpg", "labels": ["person", "cat"]},
            {"image": str(photos / "sub" / "c.jpg"), "labels": [], "split": "val"}]
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    assert [(s.image_id, s.labels) for s in load_samples(manifest, "train")] == [("b", (CAT, PERSON))]
    assert [(s.image_id, s.labels) for s in load_samples(manifest, "val")] == [("a", (CAT,)), ("c", ())]


def test_csv_split_column_selects_rows(photos):
    manifest = photos / "data.csv"
    manifest.write_text("image,labels,split\na.jpg,cat,train\nb.jpg,dog,val\n")
    assert [s.image_id for s in load_samples(manifest, "val")] == ["b"]


def test_manifest_problems_name_the_row(photos):
    manifest = photos / "data.csv"
    manifest.write_text("image,labels\na.jpg,cat\nb.jpg,unicorn\n")
    with pytest.raises(DataError, match="unicorn") as caught:
        load_samples(manifest, "train")
    assert caught.value.path == f"{manifest}:3"
    manifest.write_text("image,labels\nmissing.jpg,cat\n")
    with pytest.raises(DataError, match="missing.jpg"):
        load_samples(manifest, "train")
    manifest.write_text("picture,labels\na.jpg,cat\n")
    with pytest.raises(DataError, match="image"):
        load_samples(manifest, "train")
