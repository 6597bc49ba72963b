"""The PyTorchJob spec, and `launch_and_wait` against a loopback imitation of the Kubernetes API.

No real cluster is used: none runs here, and a PyTorchJob needs the Kubeflow Training Operator and GPU nodes
behind the API server. The loopback server answers the two endpoints the real `kubernetes` client calls
(POST to create, GET to poll), so the test checks what the client really sends and how conditions are read.
"""
from __future__ import annotations

import pytest

from tests.fixtures_kubernetes import NAMESPACE, FakeKubernetesApi
from wsseg.errors import WssegError
from wsseg.kube.pytorchjob import launch_and_wait, pytorchjob_spec

TRAIN_ARGS = ["--data", "/data/voc", "--masks", "s3://runs/r1/masks", "--out", "s3://runs/r1/segmenter",
              "--preset", "gpu"]


def containers(spec: dict) -> list[dict]:
    return [container for replica in spec["spec"]["pytorchReplicaSpecs"].values()
            for container in replica["template"]["spec"]["containers"]]


def test_spec_runs_one_torchrun_per_node_with_a_gpu_per_process():
    spec = pytorchjob_spec("seg", TRAIN_ARGS, nodes=3, gpus_per_node=4, image="registry/wsseg:1")
    assert spec["apiVersion"] == "kubeflow.org/v1" and spec["kind"] == "PyTorchJob"
    replicas = spec["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    for container in containers(spec):
        assert container["name"] == "pytorch" and container["image"] == "registry/wsseg:1"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
        assert container["resources"]["requests"]["nvidia.com/gpu"] == "4"
        assert "--nnodes=3" in container["command"] and "--nproc_per_node=4" in container["command"]
        assert "--node_rank=$(RANK)" in container["command"]
        assert container["args"] == ["-m", "wsseg.runtime.distributed", *TRAIN_ARGS]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    volume = replicas["Master"]["template"]["spec"]["volumes"][0]
    assert volume["emptyDir"]["medium"] == "Memory"


def test_single_node_job_has_a_master_and_no_workers():
    spec = pytorchjob_spec("seg", TRAIN_ARGS, nodes=1, gpus_per_node=8, image="img")
    assert list(spec["spec"]["pytorchReplicaSpecs"]) == ["Master"]


def test_credentials_come_from_the_secret_never_as_literals():
    spec = pytorchjob_spec("seg", TRAIN_ARGS, image="img", env={"AWS_ENDPOINT_URL": "http://minio:9000"})
    env = {variable["name"]: variable for variable in containers(spec)[0]["env"]}
    for variable, key in (("AWS_ACCESS_KEY_ID", "accesskey"), ("AWS_SECRET_ACCESS_KEY", "secretkey")):
        assert "value" not in env[variable]
        assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "mlpipeline-minio-artifact", "key": key}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"


def test_spec_defaults_to_the_wsseg_image():
    from wsseg.image import WSSEG_IMAGE

    assert containers(pytorchjob_spec("seg", TRAIN_ARGS))[0]["image"] == WSSEG_IMAGE


def launch(spec: dict, server: FakeKubernetesApi, namespace: str = NAMESPACE, timeout: float = 30) -> dict:
    from kubernetes import client

    api_client = client.ApiClient(client.Configuration(host=server.url))
    return launch_and_wait(spec, namespace, timeout=timeout, poll_interval=0.01, api_client=api_client)


def condition(kind: str, message: str = "") -> dict:
    return {"conditions": [{"type": "Created", "status": "True"},
                           {"type": kind, "status": "True", "message": message}]}


RUNNING, SUCCEEDED = condition("Running", "pods running"), condition("Succeeded", "done")


@pytest.mark.parametrize("kubernetes_api", [([RUNNING, RUNNING, SUCCEEDED],)], indirect=True)
def test_launch_creates_the_job_and_waits_until_it_succeeds(kubernetes_api):
    spec = pytorchjob_spec("seg-1", TRAIN_ARGS, nodes=2, image="img")
    job = launch(spec, kubernetes_api)
    assert kubernetes_api.created == [spec]
    assert kubernetes_api.gets == 3
    assert job["status"] == SUCCEEDED


FAILED = condition("Failed", "pod seg-1-worker-0 OOMKilled")


@pytest.mark.parametrize("kubernetes_api", [([RUNNING, FAILED],)], indirect=True)
def test_a_failed_job_raises_with_the_operators_message(kubernetes_api):
    spec = pytorchjob_spec("seg-1", TRAIN_ARGS, image="img")
    with pytest.raises(WssegError, match="seg-1 failed: pod seg-1-worker-0 OOMKilled"):
        launch(spec, kubernetes_api)


@pytest.mark.parametrize("kubernetes_api", [([RUNNING],)], indirect=True)
def test_a_job_still_running_at_the_timeout_raises(kubernetes_api):
    spec = pytorchjob_spec("seg-1", TRAIN_ARGS, image="img")
    with pytest.raises(WssegError, match="did not finish within 0.2 s"):
        launch(spec, kubernetes_api, timeout=0.2)


@pytest.mark.parametrize("kubernetes_api", [([SUCCEEDED], 409)], indirect=True)
def test_an_existing_job_of_that_name_is_waited_on(kubernetes_api):
    spec = pytorchjob_spec("seg-1", TRAIN_ARGS, image="img")
    job = launch(spec, kubernetes_api)
    assert job["status"] == SUCCEEDED


@pytest.mark.parametrize("kubernetes_api", [([RUNNING],)], indirect=True)
def test_a_missing_operator_or_namespace_is_named_in_the_error(kubernetes_api):
    spec = pytorchjob_spec("seg-1", TRAIN_ARGS, image="img")
    with pytest.raises(WssegError, match="404.*Training Operator installed"):
        launch(spec, kubernetes_api, namespace="other-namespace")
