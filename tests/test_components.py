"""Each KFP component alone, then whole DAGs, under kfp.local on a tiny synthetic dataset.

These run the real components in subprocesses (SubprocessRunner without a venv), exactly the code a
cluster runs, with the local store standing in for S3.
"""
import io
import json

import kfp.local
import pytest
import yaml
from kfp import dsl
from kfp.dsl import Dataset, Model
from PIL import Image

from wsseg.config import dump_config, load_config, load_config_text
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


def run_alone(component, imported: dict, **parameters):
    """Run one component as the only task of a pipeline, its input artifacts imported from store URIs.

    kfp.local refuses artifacts passed to a lone task; an importer is how KFP feeds an existing artifact.
    """
    @dsl.pipeline(name=f"{component.name}-alone")
    def alone():
        inputs = {name: dsl.importer(artifact_uri=uri, artifact_class=cls, metadata={"store": uri}).output
                  for name, (cls, uri) in imported.items()}
        component(**parameters, **inputs)

    alone()


def test_each_component_runs_alone_and_hands_its_output_on(local_kfp, config_yaml, tiny_voc):
    from components.evaluate import evaluate
    from components.mine_cams import mine_cams
    from components.open_run import open_run
    from components.refine import refine
    from components.refine_levels import refine_levels
    from components.train_classifier import train_classifier
    from components.train_segmenter import train_segmenter
    from wsseg.classes import ClassList
    from wsseg.steps.evaluate import merge_evaluation
    from wsseg.steps.mine_cams import merge_mine_cams

    common = {"data": str(tiny_voc), "config_yaml": config_yaml}
    run_store = open_run(store_uri=str(local_kfp / "store"), run_name="alone", job_id="job-1",
                         config_yaml=config_yaml).output
    run = open_store(run_store)
    assert run.exists("config.yaml")

    classifier = train_classifier(run_store=run_store, **common).outputs["classifier"]
    assert classifier.metadata["store"] == run.child("train-classifier").uri
    assert run.child("train-classifier").exists("checkpoint.pth")

    # A per-image step's task works on a shard (here the one shard of one); the merge tasks, which take the shard
    # tasks' collected outputs, run in the DAG tests, and here as the library calls they wrap.
    whole = {"shard": 0, "shards": 1}
    run_alone(mine_cams, {"classifier": (Model, classifier.metadata["store"])}, run_store=run_store, **whole,
              **common)
    cam_ids = {key.removesuffix(".npz") for key in run.child("mine-cams").list() if key.endswith(".npz")}
    assert cam_ids, "mine-cams wrote no CAM file"
    merge_mine_cams(run.child("mine-cams"), 1)

    cams = (Dataset, run.child("mine-cams").uri)
    run_alone(refine_levels, {"cams": cams}, run_store=run_store, **common)
    run_alone(refine, {"cams": cams, "levels": (Dataset, run.child("refine").uri)}, run_store=run_store, **whole,
              **common)
    mask_ids = {key.removesuffix(".png") for key in run.child("refine").list() if key.endswith(".png")}
    assert mask_ids == cam_ids

    run_alone(train_segmenter, {"pseudo_masks": (Dataset, run.child("refine").uri)}, run_store=run_store, **common)
    assert run.child("train-segmenter").exists("checkpoint.pth")

    run_alone(evaluate, {"cams": cams, "pseudo_masks": (Dataset, run.child("refine").uri),
                         "segmenter": (Model, run.child("train-segmenter").uri)}, run_store=run_store, **whole,
              **common)
    config = load_config_text(config_yaml)
    merge_evaluation(run.child("refine"), run.child("evaluate"), config, ClassList(config["classes"]), 1)
    headline = json.loads(run.child("evaluate").get_bytes("metrics.json"))["headline"]
    for name in ("cam_miou", "pseudo_mask_miou", "segmenter_miou"):
        assert 0 <= headline[name] <= 100


@pytest.fixture(scope="module")
def wsss_dags(local_kfp, tiny_voc):
    """The wsss DAG on the tiny set with the preset's config (instances off), and again with instances on: each
    run's metrics and store."""
    from wsseg.runtime.runner import run_pipeline

    with_instances = load_config(preset="cpu-tiny")
    with_instances["instances"]["enabled"] = True
    runs = {}
    for name, config in (("dag", load_config(preset="cpu-tiny")), ("dag-instances", with_instances)):
        metrics = run_pipeline("wsss", str(tiny_voc), local_kfp / name, config)
        runs[name] = metrics, open_store(str((local_kfp / name / "store").resolve())).child("wsss")
    return runs


def test_wsss_dag_runs_end_to_end_and_reports_every_figure(wsss_dags):
    metrics, run = wsss_dags["dag"]
    headline = metrics["headline"]
    for name in ("cam_miou", "pseudo_mask_miou", "segmenter_miou"):
        assert 0 <= headline[name] <= 100
    assert yaml.safe_load(run.get_bytes("config.yaml")) == load_config(preset="cpu-tiny")
    mask_key = next(key for key in run.child("refine").list() if key.endswith(".png"))
    with Image.open(io.BytesIO(run.child("refine").get_bytes(mask_key))) as mask:
        assert mask.mode == "P"


def test_the_instance_setting_off_is_the_config_without_it():
    assert load_config_text("preset: cpu-tiny") == load_config_text("preset: cpu-tiny\ninstances: {enabled: false}")


def test_without_instances_the_dag_runs_no_instance_step_and_reports_no_instance_figure(wsss_dags):
    metrics, run = wsss_dags["dag"]
    assert not any(run.child(step).list() for step in ("train-irn", "group-instances", "train-instance-heads"))
    assert all(value is None for key, value in metrics["headline"].items() if "map" in key)


def test_with_instances_the_dag_adds_their_figures_and_keeps_every_semantic_output(wsss_dags):
    (plain, plain_run), (metrics, run) = wsss_dags["dag"], wsss_dags["dag-instances"]
    for key in ("instance_map50", "instance_map70", "connected_components_map50", "instance_label_map50"):
        assert 0 <= metrics["headline"][key] <= 100, key
    assert {key: value for key, value in metrics["headline"].items() if "map" not in key} == {
        key: value for key, value in plain["headline"].items() if "map" not in key}
    for step in ("mine-cams", "refine"):
        keys = sorted(key for key in plain_run.child(step).list() if key.endswith((".npz", ".png")))
        assert keys and keys == sorted(key for key in run.child(step).list() if key.endswith((".npz", ".png")))
        assert all(plain_run.child(step).get_bytes(key) == run.child(step).get_bytes(key) for key in keys), step
    assert "Instances (VOC mAP)" in run.child("evaluate").get_bytes("report.md").decode()


def test_supervised_dag_trains_on_ground_truth(local_kfp, tiny_voc):
    from wsseg.runtime.runner import run_pipeline

    metrics = run_pipeline("supervised", str(tiny_voc), local_kfp / "upper", load_config(preset="cpu-tiny"))
    assert 0 <= metrics["headline"]["segmenter_miou"] <= 100
    run = open_store(str((local_kfp / "upper" / "store").resolve())).child("supervised")
    assert not any(run.child("refine").list()), "the upper bound must not use pseudo masks"


def test_predict_pipeline_labels_a_folder_with_a_trained_segmenter(local_kfp, config_yaml, tiny_voc, tiny_segmenter):
    from pipelines.predict import label_images

    label_images(segmenter=tiny_segmenter.uri, images=str(tiny_voc / "JPEGImages"),
                 store_uri=str(local_kfp / "labelled"), config_yaml=config_yaml, run_name="batch")
    labelled = open_store(local_kfp / "labelled").child("batch").child("predict")
    image_ids = {path.stem for path in (tiny_voc / "JPEGImages").iterdir()}
    assert {key for key in labelled.list() if key.startswith("masks/")} == {f"masks/{i}.png" for i in image_ids}
    assert json.loads(labelled.get_bytes("summary.json"))["predicted"] == len(image_ids)
