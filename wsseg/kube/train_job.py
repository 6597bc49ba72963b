"""train-classifier or train-segmenter on several GPUs from a pipeline step: the step's pod launches a
PyTorchJob and waits.

The step's config section's `launch` (`classifier.launch`, `segmenter.launch`) asks for it (`nodes` ×
`gpus_per_node` > 1). The job's pods run the same step under torchrun (`wsseg.runtime.distributed`) with the
original dataset and store URIs, each rank streaming its share of the images from the store, read the config the
launcher left in the output store, and write the model there; the launcher then returns the metrics they wrote.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from wsseg.config import dump_config
from wsseg.kube.pytorchjob import CREDENTIALS_SECRET, launch_and_wait, pytorchjob_spec
from wsseg.store import ArtifactStore

log = logging.getLogger(__name__)

JOB_CONFIG = "job_config.yaml"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Plain settings the training pods need to reach the same store; credentials travel through the secret.
STORE_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "WSSEG_S3_SECURE", "AWS_REGION")


# The training steps that can launch a PyTorchJob, and the config section holding their `launch`.
TRAINING_SECTIONS = {"train-classifier": "classifier", "train-segmenter": "segmenter"}


def default_launch() -> dict:
    """A training section's `launch`: one GPU (no PyTorchJob) unless the config asks for more."""
    return dict(nodes=1, gpus_per_node=1, namespace="", image="", credentials_secret=CREDENTIALS_SECRET,
                timeout_s=48 * 3600)


def wants_training_job(config: dict, command: str = "train-segmenter") -> bool:
    if command not in TRAINING_SECTIONS:
        return False
    launch = config[TRAINING_SECTIONS[command]]["launch"]
    return launch["nodes"] * launch["gpus_per_node"] > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1


def train_as_job(command: str, data: str, inputs: dict[str, ArtifactStore | None], out: ArtifactStore,
                 config: dict) -> dict:
    """Run the training step `command` as a PyTorchJob on the cluster and return the metrics its rank 0 wrote to
    `out`; `inputs` are its input stores by name (masks, init_segmenter), None where not given."""
    section = TRAINING_SECTIONS[command]
    launch = config[section]["launch"]
    out.put_bytes(JOB_CONFIG, dump_config(config).encode())
    train_args = ["--data", data, "--out", out.uri, "--config", f"{out.uri}/{JOB_CONFIG}"]
    for name, store in inputs.items():
        if store is not None:
            train_args += [f"--{name.replace('_', '-')}", store.uri]
    spec = pytorchjob_spec(job_name(out.uri, section), [command, *train_args], nodes=launch["nodes"],
                           gpus_per_node=launch["gpus_per_node"], image=launch["image"] or None,
                           env={name: os.environ[name] for name in STORE_SETTINGS if os.environ.get(name)},
                           credentials_secret=launch["credentials_secret"])
    namespace = launch["namespace"] or current_namespace()
    log.info("%s: launching PyTorchJob %s/%s on %d node(s) x %d GPU(s)", command, namespace,
             spec["metadata"]["name"], launch["nodes"], launch["gpus_per_node"])
    launch_and_wait(spec, namespace, timeout=launch["timeout_s"])
    return json.loads(out.get_bytes("metrics.json"))


def job_name(out_uri: str, section: str = "segmenter") -> str:
    """The same name for the same output: a retried step finds the job its first attempt launched."""
    return f"wsseg-{section}-" + hashlib.sha256(out_uri.encode()).hexdigest()[:12]


def current_namespace() -> str:
    """The namespace of the pod this runs in (a KFP step runs in its profile's namespace)."""
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return "kubeflow"
