"""Each KFP component alone, then whole DAGs, under kfp.local on a tiny synthetic dataset.

These run the real components in subprocesses (SubprocessRunner without a venv), exactly the code a
cluster runs, with the local store standing in for S3.
"""
import io
import json
from pathlib import Path

import kfp.local
import pytest
import yaml
from PIL import Image

from wsseg.config import dump_config, load_config
from wsseg.store import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_kfp(tmp_path_factory):
    root = tmp_path_factory.mktemp("kfp")
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "pipeline-root"))
    return root


@pytest.fixture(scope="module")
def config_yaml():
    return dump_config(load_config(preset="cpu-tiny"))


def pointer_store(artifact):
    return open_store(json.loads(Path(artifact.path).read_text())["store"])


def test_each_component_runs_alone_and_hands_its_output_on(local_kfp, config_yaml, tiny_voc):
    from components.evaluate import evaluate
    from components.mine_cams import mine_cams
    from components.open_run import open_run
    from components.refine import refine
    from components.train_classifier import train_classifier
    from components.train_segmenter import train_segmenter

    common = {"data": str(tiny_voc), "config_yaml": config_yaml}
    run_store = open_run(store_uri=str(local_kfp / "store"), run_name="alone", job_id="job-1",
                         config_yaml=config_yaml).output
    assert open_store(run_store).exists("config.yaml")

    classifier = train_classifier(run_store=run_store, **common).outputs["classifier"]
    assert pointer_store(classifier).exists("checkpoint.pth")

    cams = mine_cams(run_store=run_store, classifier=classifier, **common).outputs["cams"]
    cam_files = [key for key in pointer_store(cams).list() if key.endswith(".npz")]
    assert cam_files, "mine-cams wrote no CAM file"

    masks = refine(run_store=run_store, cams=cams, **common).outputs["pseudo_masks"]
    mask_keys = [key for key in pointer_store(masks).list() if key.endswith(".png")]
    assert {key.removesuffix(".png") for key in mask_keys} == {key.removesuffix(".npz") for key in cam_files}

    segmenter = train_segmenter(run_store=run_store, pseudo_masks=masks, **common).outputs["segmenter"]
    assert pointer_store(segmenter).exists("checkpoint.pth")

    evaluation = evaluate(run_store=run_store, cams=cams, pseudo_masks=masks, segmenter=segmenter, **common)
    figures = evaluation.outputs["metrics"].metadata
    for name in ("cam_miou", "pseudo_mask_miou", "segmenter_miou"):
        assert 0 <= figures[name] <= 100
    assert "<table" in Path(evaluation.outputs["report"].path).read_text()
    assert "|" in Path(evaluation.outputs["summary"].path).read_text()


def test_wsss_dag_runs_end_to_end_and_reports_every_figure(local_kfp, tiny_voc):
    from wsseg.runner import run_pipeline

    metrics = run_pipeline("wsss", str(tiny_voc), local_kfp / "dag", load_config(preset="cpu-tiny"))
    headline = metrics["headline"]
    for name in ("cam_miou", "pseudo_mask_miou", "segmenter_miou"):
        assert 0 <= headline[name] <= 100
    run = open_store(str((local_kfp / "dag" / "store").resolve())).child("wsss")
    assert yaml.safe_load(run.get_bytes("config.yaml")) == load_config(preset="cpu-tiny")
    mask_key = next(key for key in run.child("refine").list() if key.endswith(".png"))
    with Image.open(io.BytesIO(run.child("refine").get_bytes(mask_key))) as mask:
        assert mask.mode == "P"


def test_supervised_dag_trains_on_ground_truth(local_kfp, tiny_voc):
    from wsseg.runner import run_pipeline

    metrics = run_pipeline("supervised", str(tiny_voc), local_kfp / "upper", load_config(preset="cpu-tiny"))
    assert 0 <= metrics["headline"]["segmenter_miou"] <= 100
    run = open_store(str((local_kfp / "upper" / "store").resolve())).child("supervised")
    assert not any(run.child("refine").list()), "the upper bound must not use pseudo masks"
