"""How steps ask a Kubernetes cluster for resources, credentials and retries.

Set here, at the pipeline level, not inside components (KFP practice); `kfp.local` ignores all of it.
"""
from kfp import kubernetes
from kfp.dsl import PipelineTask

# KFP's own object-store secret; a pipeline parameter lets a cluster name another.
DEFAULT_S3_SECRET = "mlpipeline-minio-artifact"
S3_SECRET_KEYS = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}


def with_store_credentials(task: PipelineTask, secret_name) -> PipelineTask:
    kubernetes.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env=S3_SECRET_KEYS)
    return task


def uncached(task: PipelineTask) -> PipelineTask:
    # Inputs are URIs (dataset, store) whose content can change under the same string; a cache keyed on
    # the strings would hide that. Resuming comes from the run store instead (finished outputs are skipped).
    return task.set_caching_options(False)


def gpu_step(task: PipelineTask, cpu: str = "8", memory: str = "32G", shm: str = "8Gi") -> PipelineTask:
    """One GPU, CPUs for data loading, and a RAM-backed /dev/shm (PyTorch workers share batches through it)."""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    task.set_cpu_request(cpu).set_memory_request(memory)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=shm)
    return retried(task)


def cpu_step(task: PipelineTask, cpu: str, memory: str = "16G") -> PipelineTask:
    """A step that is CPU-bound (dense CRF runs one process per core)."""
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory)
    return retried(task)


def retried(task: PipelineTask) -> PipelineTask:
    # Steps resume from the run store, so a retry after a lost node or an OOM kill redoes little.
    return task.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="600s")


def light_step(task: PipelineTask) -> PipelineTask:
    return task.set_cpu_request("1").set_memory_request("2G")


def set_resources(tasks: dict[str, list], s3_secret) -> None:
    """Resources, retries and credentials of `tasks`, grouped by what they need: "light" (merges, plans, reports),
    "gpu" (training, CAM mining, the random walk, inference) and "cpu" (the dense CRF)."""
    for task in tasks["light"]:
        light_step(task)
    for task in tasks["gpu"]:
        gpu_step(task)
    for task in tasks["cpu"]:
        cpu_step(task, cpu="16")
    for task in (task for group in tasks.values() for task in group):
        uncached(with_store_credentials(task, s3_secret))
