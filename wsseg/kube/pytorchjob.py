"""Training past one node: a Kubeflow Training Operator `PyTorchJob`, launched and waited on.

Each replica (pod) runs `torchrun` with one process per GPU; the operator gives every pod `MASTER_ADDR`,
`MASTER_PORT`, `WORLD_SIZE` (pods) and `RANK` (the pod's index, Master = 0), which the command passes to
torchrun as node rank and rendezvous address. Kubernetes expands `$(VAR)` in a container's command from its
environment, so this works with operator versions that set only those four (older ones set no `PET_*`).
"""
from __future__ import annotations

import logging
import os
import time

from wsseg.errors import WssegError

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
CREDENTIALS_SECRET = "mlpipeline-minio-artifact"
# Secret key -> environment variable the S3 store reads.
CREDENTIAL_KEYS = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}


class KubernetesApiError(WssegError):
    """The Kubernetes API refused a request; `status` is its HTTP status."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def default_image() -> str:
    from wsseg.image import WSSEG_IMAGE

    return WSSEG_IMAGE


def pytorchjob_spec(name: str, train_args: list[str], *, nodes: int = 1, gpus_per_node: int = 1,
                    image: str | None = None, env: dict[str, str] | None = None,
                    credentials_secret: str = CREDENTIALS_SECRET, shm_size: str = "16Gi") -> dict:
    """A PyTorchJob training on `nodes` pods of `gpus_per_node` GPUs each.

    `train_args` are the training step's name and its flags (`train-segmenter --data ... --masks ... --out ...`,
    as `wsseg.runtime.distributed` takes them); `env`
    holds plain settings such as `AWS_ENDPOINT_URL`. Credentials come only from `credentials_secret`.
    """
    if nodes < 1 or gpus_per_node < 1:
        raise WssegError(f"a PyTorchJob needs at least one node and one GPU per node, "
                         f"got {nodes} x {gpus_per_node}")
    template = _pod_template(_container(train_args, nodes, gpus_per_node, image or default_image(), env or {},
                                        credentials_secret), shm_size)
    replicas = {"Master": _replica_spec(1, template)}
    if nodes > 1:
        replicas["Worker"] = _replica_spec(nodes - 1, template)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "wsseg"}},
        # A failed pod is restarted a few times (training resumes from the store's last.pth), then it fails.
        "spec": {"runPolicy": {"backoffLimit": 3, "cleanPodPolicy": "None"}, "pytorchReplicaSpecs": replicas},
    }


def launch_and_wait(spec: dict, namespace: str, timeout: float, poll_interval: float = 15.0,
                    api_client=None) -> dict:
    """Create the PyTorchJob and poll it until it succeeds; returns its final object.

    Raises `WssegError` when it fails (with the operator's message) or `timeout` seconds pass. A job of the
    same name that already exists is waited on rather than launched twice (a retried step re-attaches).
    """
    from kubernetes import client

    api = client.CustomObjectsApi(api_client or _cluster_client())
    name = spec["metadata"]["name"]
    where = f"PyTorchJob {namespace}/{name}"
    _create(api, spec, namespace, where)
    deadline = time.monotonic() + timeout
    while True:
        job = _call(lambda: api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name), where)
        state, message = finished_state(job)
        if state == "Succeeded":
            log.info("%s succeeded", where)
            return job
        if state == "Failed":
            raise WssegError(f"{where} failed: {message or 'no message from the training operator'}")
        if time.monotonic() >= deadline:
            raise WssegError(f"{where} did not finish within {timeout:g} s (last condition: "
                             f"{message or 'none'}); it is still running: inspect it with "
                             f"`kubectl -n {namespace} describe pytorchjob {name}`")
        time.sleep(poll_interval)


def finished_state(job: dict) -> tuple[str | None, str]:
    """("Succeeded" | "Failed" | None, message of the latest condition) from a PyTorchJob's status."""
    conditions = job.get("status", {}).get("conditions") or []
    for condition in conditions:
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            return condition["type"], condition.get("message", "")
    return None, conditions[-1].get("message", "") if conditions else ""


def _container(train_args: list[str], nodes: int, gpus_per_node: int, image: str, env: dict[str, str],
               credentials_secret: str) -> dict:
    torchrun = ["torchrun", f"--nnodes={nodes}", f"--nproc_per_node={gpus_per_node}", "--node_rank=$(RANK)",
                "--master_addr=$(MASTER_ADDR)", "--master_port=$(MASTER_PORT)"]
    secret_env = [{"name": variable, "valueFrom": {"secretKeyRef": {"name": credentials_secret, "key": key}}}
                  for key, variable in CREDENTIAL_KEYS.items()]
    gpus = {"nvidia.com/gpu": str(gpus_per_node)}
    return {
        "name": "pytorch",  # the operator finds the training container by this name
        "image": image,
        "command": torchrun,
        "args": ["-m", "wsseg.runtime.distributed", *train_args],
        "env": [{"name": key, "value": value} for key, value in env.items()] + secret_env,
        "resources": {"requests": gpus, "limits": gpus},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }


def _pod_template(container: dict, shm_size: str) -> dict:
    return {
        # An Istio sidecar would intercept the ranks' rendezvous traffic.
        "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {
            "containers": [container],
            # Dataloader workers pass batches through shared memory; Docker's default 64 MiB is too small.
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}}],
        },
    }


def _replica_spec(replicas: int, template: dict) -> dict:
    return {"replicas": replicas, "restartPolicy": "OnFailure", "template": template}


def _create(api, spec: dict, namespace: str, where: str) -> None:
    try:
        _call(lambda: api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, spec), where)
        log.info("%s created", where)
    except KubernetesApiError as error:
        if error.status != 409:
            raise
        log.info("%s already exists; waiting on it", where)


def _call(request, where: str):
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return request()
    except ApiException as error:
        raise _api_error(where, error) from None
    except HTTPError as error:
        raise WssegError(f"{where}: cannot reach the Kubernetes API: {error}") from None


def _api_error(where: str, error) -> KubernetesApiError:
    hint = {404: " (is the Kubeflow Training Operator installed, and does the namespace exist?)",
            403: " (may this service account create pytorchjobs in that namespace?)"}.get(error.status, "")
    return KubernetesApiError(error.status,
                              f"{where}: Kubernetes API answered {error.status} {error.reason}{hint}")


def _cluster_client():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        # The client reads KUBECONFIG once, at import; a variable set later must be passed on.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.ApiClient()
