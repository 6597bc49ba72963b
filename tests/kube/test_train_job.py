"""A training step whose config asks for several GPUs (train-segmenter, train-classifier) trains through a
PyTorchJob.

The Kubernetes API is the loopback imitation of fixtures_kubernetes (no cluster runs here). The operator's
pod is played by running the job container's own arguments through `wsseg.runtime.distributed` in this
process, so the job really trains from the URIs (data, the segmenter to start from) and the config the launching
step put into the spec.
"""
from __future__ import annotations

import json

import pytest
from kfp.dsl import Model

from tests.fixtures_kubernetes import NAMESPACE
from wsseg.config import load_config_text
from wsseg.kube.train_job import job_name
from wsseg.runtime import distributed
from wsseg.runtime.pipeline_io import run_step
from wsseg.store import open_store

SUCCEEDED = {"conditions": [{"type": "Succeeded", "status": "True", "message": "done"}]}
CONFIG = f"""
preset: cpu-tiny
segmenter:
  launch:
    gpus_per_node: 2
    namespace: {NAMESPACE}
    image: registry.example/wsseg:test
"""


def run_pod(job: dict) -> None:
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    module_flag, module, *train_args = container["args"]
    assert (module_flag, module) == ("-m", "wsseg.runtime.distributed")
    assert distributed.main(train_args) == 0


@pytest.mark.slow
@pytest.mark.parametrize("kubernetes_api", [([SUCCEEDED],)], indirect=True)
def test_a_step_asking_for_two_gpus_launches_a_pytorchjob_that_trains(kubernetes_api, kubeconfig, s3_env,
                                                                        tiny_voc, tiny_segmenter, tmp_path):
    kubernetes_api.on_create = run_pod
    segmenter = Model(name="segmenter", uri=str(tmp_path / "segmenter"), metadata={})
    init_segmenter = Model(name="init", uri=str(tmp_path / "init"), metadata={"store": tiny_segmenter.uri})

    summary = run_step("train-segmenter", str(tiny_voc), s3_env, CONFIG,
                       {"masks": None, "init_segmenter": init_segmenter}, segmenter)

    out = open_store(s3_env).child("train-segmenter")
    [job] = kubernetes_api.created
    assert job["metadata"]["name"] == job_name(out.uri)
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "--nproc_per_node=2" in container["command"]
    assert container["image"] == "registry.example/wsseg:test"
    assert container["args"][container["args"].index("--data") + 1] == str(tiny_voc)
    assert container["args"][container["args"].index("--init-segmenter") + 1] == tiny_segmenter.uri
    # The pod reached the launcher's store through the endpoint it was given, with credentials from the secret.
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"].startswith("http://127.0.0.1:")
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert summary == json.loads(out.get_bytes("metrics.json"))
    assert summary["iterations"] == load_config_text(CONFIG)["segmenter"]["iterations"]
    assert summary["initialised_from"] == tiny_segmenter.uri
    assert out.exists("checkpoint.pth")
    assert json.loads((tmp_path / "segmenter").read_text()) == {"store": out.uri}


@pytest.mark.slow
@pytest.mark.parametrize("kubernetes_api", [([SUCCEEDED],)], indirect=True)
def test_a_classifier_asking_for_two_gpus_launches_a_pytorchjob_that_trains(kubernetes_api, kubeconfig, s3_env,
                                                                              tiny_voc, tmp_path):
    kubernetes_api.on_create = run_pod
    classifier = Model(name="classifier", uri=str(tmp_path / "classifier"), metadata={})
    config = CONFIG.replace("segmenter:", "classifier:")

    summary = run_step("train-classifier", str(tiny_voc), s3_env, config, {}, classifier)

    out = open_store(s3_env).child("train-classifier")
    [job] = kubernetes_api.created
    assert job["metadata"]["name"] == job_name(out.uri, "classifier")
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["args"][2] == "train-classifier" and "--nproc_per_node=2" in container["command"]
    assert summary == json.loads(out.get_bytes("metrics.json"))
    assert out.exists("checkpoint.pth")


def test_one_gpu_trains_in_the_step_itself_without_kubernetes():
    from wsseg.kube.train_job import wants_training_job

    assert not wants_training_job(load_config_text("preset: gpu"), "train-segmenter")
    assert wants_training_job(load_config_text("preset: gpu\nsegmenter: {launch: {nodes: 2}}"), "train-segmenter")
    assert wants_training_job(load_config_text("preset: gpu\nclassifier: {launch: {gpus_per_node: 4}}"),
                              "train-classifier")
    assert not wants_training_job(load_config_text("preset: gpu\nclassifier: {launch: {gpus_per_node: 4}}"),
                                  "train-segmenter")
