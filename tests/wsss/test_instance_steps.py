"""The instance steps on a tiny dataset: train-irn, group-instances and train-instance-heads resume from their
stores; the instance model is the segmenter with heads, predicting its masks unchanged; evaluate and predict put
it to use beside connected components."""
import copy
import json

import numpy as np
import pytest
import torch

from wsseg.classes import IGNORE_INDEX, ClassList
from wsseg.config import default_config
from wsseg.errors import ConfigError
from wsseg.steps.evaluate import evaluate
from wsseg.steps.group_instances import group_instances
from wsseg.steps.mine_cams import mine_cams
from wsseg.steps.refine import refine_with_crf
from wsseg.steps.train_classifier import train_classifier
from wsseg.steps.train_instance_heads import train_instance_heads
from wsseg.steps.train_irn import train_irn
from wsseg.steps.train_segmenter import train_segmenter
from wsseg.store import open_store
from wsseg.wsss.instance_labels import read_instances, stored_ids

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
CLASSES = ClassList()


def instance_config() -> dict:
    config = default_config("cpu-tiny")
    config["instances"]["enabled"] = True
    config["segmenter"].update(iterations=4, validate=False)
    return config


@pytest.fixture(scope="module")
def instance_run(tiny_voc, tmp_path_factory):
    """Every step of the wsss pipeline with instances, on the tiny set; the stores by step name."""
    work, config = tmp_path_factory.mktemp("instances"), instance_config()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    stores = {name: open_store(work / name) for name in ("classifier", "cams", "masks", "segmenter", "irn", "labels",
                                                          "heads")}
    try:
        train_classifier(tiny_voc, stores["classifier"], config, CLASSES)
        mine_cams(tiny_voc, stores["classifier"], stores["cams"], config, CLASSES)
        refine_with_crf(tiny_voc, stores["cams"], stores["masks"], config, CLASSES)
        train_segmenter(tiny_voc, stores["masks"], stores["segmenter"], config, CLASSES)
        summaries = {
            "irn": train_irn(tiny_voc, stores["classifier"], stores["masks"], stores["irn"], config, CLASSES),
            "labels": group_instances(tiny_voc, stores["cams"], stores["masks"], stores["irn"], stores["labels"],
                                      config, CLASSES),
            "heads": train_instance_heads(tiny_voc, stores["segmenter"], stores["labels"], stores["heads"], config,
                                          CLASSES)}
    finally:
        torch.set_num_threads(threads)
    return stores, summaries, config, work


def test_without_instances_enabled_the_steps_do_nothing(tiny_voc, tmp_path):
    config, empty = default_config("cpu-tiny"), open_store(tmp_path / "none")
    assert train_irn(tiny_voc, empty, empty, empty, config, CLASSES) == {"instances": "disabled"}
    assert group_instances(tiny_voc, empty, empty, empty, empty, config, CLASSES) == {"instances": "disabled"}
    assert train_instance_heads(tiny_voc, empty, empty, empty, config, CLASSES) == {"instances": "disabled"}
    assert not empty.list()


def test_train_irn_writes_its_model_and_a_rerun_resumes_after_its_last_epoch(instance_run, tiny_voc):
    stores, summaries, config, _ = instance_run
    assert summaries["irn"]["images"] > 0 and summaries["irn"]["backbone_tensors"] > 0
    assert {"checkpoint.pth", "last.pth", "config.yaml", "summary.json"} <= set(stores["irn"].list())
    again = train_irn(tiny_voc, stores["classifier"], stores["masks"], stores["irn"], config, CLASSES)
    assert again["resumed_from_epoch"] == config["instances"]["irn"]["epochs"]


def test_group_instances_labels_every_masked_image_within_its_pseudo_mask_and_resumes(instance_run, tiny_voc):
    from wsseg.wsss.pseudo_masks import decode_mask_png

    stores, summaries, config, _ = instance_run
    masked = {key[:-4] for key in stores["masks"].list() if key.endswith(".png") and "/" not in key}
    assert stored_ids(stores["labels"]) == masked and summaries["labels"]["images"] == len(masked)
    for image_id in masked:
        instances = read_instances(stores["labels"], image_id)
        mask = decode_mask_png(stores["masks"].get_bytes(f"{image_id}.png"))
        for class_index, score, pixels in instances.masks():
            assert (mask[pixels] == class_index).all() and score >= 0
        assert ((instances.ids == 0) == (mask == 0)).all()
        assert (instances.ids[mask == IGNORE_INDEX] == 255).all()
    again = group_instances(tiny_voc, stores["cams"], stores["masks"], stores["irn"], stores["labels"], config,
                            CLASSES)
    assert again["images"] == 0 and again["already_stored"] == len(masked)


def test_the_instance_model_loads_as_a_segmenter_and_predicts_its_masks_unchanged(instance_run, tiny_voc):
    from wsseg.data import load_samples, read_image
    from wsseg.segmenter.inference import load_segmenter, predict
    from wsseg.wsss.instance_segmentor import InstanceSegmentor

    stores, summaries, _, _ = instance_run
    assert summaries["heads"]["images"] > 0
    assert {"checkpoint.pth", "mmseg_config.py", "last.pth", "summary.json"} <= set(stores["heads"].list())
    instance_model, segmenter = load_segmenter(stores["heads"], "cpu"), load_segmenter(stores["segmenter"], "cpu")
    assert isinstance(instance_model, InstanceSegmentor)
    for sample in load_samples(tiny_voc, "val", CLASSES)[:3]:
        image = read_image(sample.image_path)
        assert np.array_equal(predict(instance_model, image, multi_scale=True, flip=True),
                              predict(segmenter, image, multi_scale=True, flip=True))


def test_the_heads_need_a_finished_segmenter(instance_run, tiny_voc, tmp_path):
    stores, _, config, _ = instance_run
    with pytest.raises(ConfigError, match="train-segmenter"):
        train_instance_heads(tiny_voc, open_store(tmp_path / "no-segmenter"), stores["labels"],
                             open_store(tmp_path / "heads"), config, CLASSES)


def test_evaluate_adds_the_instance_figures_and_keeps_the_semantic_ones(instance_run, tiny_voc):
    from wsseg.data import load_samples

    stores, _, config, work = instance_run
    semantic = evaluate(tiny_voc, stores["cams"], stores["masks"], stores["segmenter"], open_store(work / "plain"),
                        config, CLASSES)
    out = open_store(work / "evaluate")
    headline = evaluate(tiny_voc, stores["cams"], stores["masks"], stores["segmenter"], out, config, CLASSES,
                        instance_labels=stores["labels"], instances=stores["heads"])
    semantic_keys = [key for key in semantic if "map" not in key]
    assert {key: headline[key] for key in semantic_keys} == {key: semantic[key] for key in semantic_keys}
    for key in ("instance_map50", "instance_map70", "connected_components_map50", "instance_label_map50",
                "pseudo_mask_components_map50"):
        assert 0 <= headline[key] <= 100, key
    assert all(value is None for key, value in semantic.items() if "map" in key)
    report = out.get_bytes("report.md").decode()
    assert "Instances (VOC mAP)" in report and "IRN instance pseudo labels" in report
    metrics = json.loads(out.get_bytes("metrics.json"))
    assert metrics["instances"]["val"]["counts"]["scored"] == len(load_samples(tiny_voc, "val", CLASSES))


def test_predict_writes_the_instance_models_instances_with_scores(instance_run, tiny_voc, tmp_path):
    from pycocotools.coco import COCO

    from wsseg.steps.predict import predict_images

    stores, _, config, _ = instance_run
    config = copy.deepcopy(config)
    config["predict"]["instances"] = True
    out = open_store(tmp_path / "predicted")
    summary = predict_images(stores["heads"], str(tiny_voc / "JPEGImages"), out, config)
    (tmp_path / "instances.json").write_bytes(out.get_bytes("instances.json"))
    coco = COCO(str(tmp_path / "instances.json"))
    annotations = coco.loadAnns(coco.getAnnIds())
    assert len(annotations) == summary["instances"]
    assert all(0 <= annotation["score"] <= 1 for annotation in annotations)
