"""`wsseg predict`: a trained segmenter (real mmseg) labels a manifest, a folder and an S3 prefix (moto) of images;
its masks are the ones evaluate scores."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from wsseg.classes import ClassList
from wsseg.config import default_config
from wsseg.data import load_samples, make_synthetic_voc, read_image, read_mask
from wsseg.errors import DataError
from wsseg.evaluation.metrics import ConfusionMatrix
from wsseg.serving.instances import mask_instances
from wsseg.steps.predict import predict_images
from wsseg.store import open_store
from wsseg.wsss.pseudo_masks import decode_mask_png

# Several threads spin against the other processes of a 2-core machine and slow each step several times.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ClassList()


@pytest.fixture(scope="module")
def fifty_val_images(tmp_path_factory):
    return make_synthetic_voc(tmp_path_factory.mktemp("voc50"), train=2, val=50, seed=3, size=64)


def tta_config(**predict) -> dict:
    config = default_config("cpu-tiny")
    config["evaluate"].update(multi_scale=True, flip=True)
    config["predict"].update(predict)
    return config


def image_folder(tiny_voc, folder, count: int = 3):
    """`count` of the tiny set's images, one of them in a subfolder; returns their ids."""
    samples = load_samples(tiny_voc, "val", CLASSES)[:count]
    ids = []
    for index, sample in enumerate(samples):
        image_id = f"nested/{sample.image_id}" if index == 0 else sample.image_id
        (folder / image_id).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample.image_path, folder / f"{image_id}.jpg")
        ids.append(image_id)
    return sorted(ids)


def test_masks_of_50_images_are_the_ones_evaluate_scored(fifty_val_images, tiny_segmenter, tmp_path):
    from wsseg.segmenter.inference import load_segmenter, predict
    from wsseg.steps.evaluate import evaluate

    samples = load_samples(fifty_val_images, "val", CLASSES)
    manifest = tmp_path / "val.csv"
    manifest.write_text("image,labels\n" + "".join(f"{sample.image_path},\n" for sample in samples))
    config = tta_config()
    out = open_store(tmp_path / "predicted")
    summary = predict_images(tiny_segmenter, str(manifest), out, config)
    scored = evaluate(fifty_val_images, None, None, tiny_segmenter, open_store(tmp_path / "evaluate"), config,
                      CLASSES)

    assert summary["predicted"] == 50 and summary["multi_scale"] and summary["flip"]
    model = load_segmenter(tiny_segmenter, device="cpu")
    matrix = ConfusionMatrix(len(CLASSES))
    for sample in samples:
        mask = decode_mask_png(out.get_bytes(f"masks/{sample.image_id}.png"))
        np.testing.assert_array_equal(mask, predict(model, read_image(sample.image_path), multi_scale=True,
                                                    flip=True))
        matrix.update(mask, read_mask(sample.mask_path))
    assert matrix.summary(CLASSES.names)["miou"] == scored["segmenter_miou"]
    report = open_store(tmp_path / "evaluate").get_bytes("report.md").decode()
    assert "Predicted at ×0.75, ×1, ×1.25 of the model's input scale, each also mirrored" in report


def test_a_folder_is_labelled_skipping_and_counting_a_corrupt_image_or_stopping_when_strict(tiny_voc,
                                                                                          tiny_segmenter, tmp_path):
    folder = tmp_path / "images"
    ids = image_folder(tiny_voc, folder)
    (folder / "broken.jpg").write_bytes((folder / f"{ids[-1]}.jpg").read_bytes()[:100])
    out = open_store(tmp_path / "out")

    summary = predict_images(tiny_segmenter, str(folder), out, tta_config())
    assert summary["predicted"] == 3 and summary["corrupt"] == 1 and summary["corrupt_ids"] == ["broken"]
    assert sorted(key for key in out.list() if key.startswith("masks/")) == sorted(f"masks/{i}.png" for i in ids)
    with pytest.raises(DataError, match="broken.jpg: cannot decode image"):
        predict_images(tiny_segmenter, str(folder), open_store(tmp_path / "strict"), tta_config(), strict=True)


def test_a_rerun_labels_only_the_images_not_yet_stored(tiny_voc, tiny_segmenter, tmp_path):
    folder = tmp_path / "images"
    ids = image_folder(tiny_voc, folder)
    out = open_store(tmp_path / "out")
    predict_images(tiny_segmenter, str(folder), out, tta_config())
    kept = out.get_bytes(f"masks/{ids[1]}.png")
    out.delete(f"masks/{ids[0]}.png")

    summary = predict_images(tiny_segmenter, str(folder), out, tta_config())
    assert summary["predicted"] == 1 and summary["already_stored"] == 2
    assert out.exists(f"masks/{ids[0]}.png") and out.get_bytes(f"masks/{ids[1]}.png") == kept
    # Asking for an output not stored yet labels every image again.
    assert predict_images(tiny_segmenter, str(folder), out, tta_config(areas=True))["predicted"] == 3


def test_an_s3_prefix_is_labelled_with_overlays_areas_and_coco_instances(s3_env, tiny_voc, tiny_segmenter,
                                                                        tmp_path):
    from pycocotools.coco import COCO

    bucket = open_store(s3_env)
    ids = image_folder(tiny_voc, tmp_path / "images")
    for image_id in ids:
        bucket.put_file(f"incoming/{image_id}.jpg", tmp_path / "images" / f"{image_id}.jpg")
    out = bucket.child("labelled")
    summary = predict_images(tiny_segmenter, f"{s3_env}/incoming", out,
                             tta_config(overlays=True, areas=True, instances=True))

    assert summary["predicted"] == 3
    regions = 0
    for image_id in ids:
        mask = decode_mask_png(out.get_bytes(f"masks/{image_id}.png"))
        regions += len(mask_instances(mask))
        areas = json.loads(out.get_bytes(f"areas/{image_id}.json"))
        assert sum(item["pixels"] for item in areas["classes"].values()) == mask.size
        for name, item in areas["classes"].items():
            assert item["pixels"] == int((mask == CLASSES.index(name)).sum())
        assert out.exists(f"overlays/{image_id}.png")
    path = tmp_path / "instances.json"
    path.write_bytes(out.get_bytes("instances.json"))
    coco = COCO(str(path))
    assert len(coco.getAnnIds()) == summary["instances"] == regions
    assert sorted(image["file_name"] for image in coco.imgs.values()) == sorted(f"{i}.jpg" for i in ids)
    for annotation in coco.loadAnns(coco.getAnnIds()):
        image_id = coco.imgs[annotation["image_id"]]["wsseg_image_id"]
        mask = decode_mask_png(out.get_bytes(f"masks/{image_id}.png"))
        assert (mask[coco.annToMask(annotation).astype(bool)] == annotation["category_id"]).all()


def test_the_predict_command_labels_a_folder(tiny_voc, tiny_segmenter, tmp_path, capsys):
    from wsseg.cli import main

    ids = image_folder(tiny_voc, tmp_path / "images", count=2)
    code = main(["predict", "--segmenter", tiny_segmenter.uri, "--images", str(tmp_path / "images"),
                 "--out", str(tmp_path / "out"), "--preset", "cpu-tiny", "--no-flip", "--areas"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["predicted"] == 2 and printed["flip"] is False
    assert all((tmp_path / "out" / "areas" / f"{image_id}.json").is_file() for image_id in ids)
