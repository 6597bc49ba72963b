"""Incremental updates from image labels (docs/METHODS.md §2): the registry's next model from the inbox's oldest new
batch, promoted only through the gate. Meant to be scheduled (`wsseg schedule incremental --cron ...`).

check-inbox claims the oldest batch not processed yet that no other run holds (`wsseg.incremental.inbox`: two
runs started together take different batches); with none, the run ends there, having changed nothing. A batch
whose classes cannot grow the current version (one that builds on classes of a version the gate refused, whose
batch has left the inbox) fails there, not in the GPU step, whose retries would only fail again. Otherwise
incremental-update trains the candidate the WILSON way on the batch, scores it and the current version on the
held-out `data`, proposes it to the registry's gate and marks the batch processed (`wsseg.steps.incremental_update`).
One batch per run: a backlog drains one scheduled run at a time. `run_name` is fixed by default, so that a run
retrying a batch a failed run left finds its training where that run stopped.
"""
from kfp import dsl

from components.check_inbox import check_inbox
from components.incremental_update import incremental_update
from components.open_run import open_run
from pipelines.cluster import DEFAULT_S3_SECRET, gpu_step, light_step, uncached, with_store_credentials


@dsl.pipeline(name="incremental", description="The registry's next model from the inbox's oldest new batch, gated")
def incremental(data: str, registry: str, inbox: str, store_uri: str, config_yaml: str = "preset: gpu",
                run_name: str = "incremental", s3_endpoint: str = "", s3_secret: str = DEFAULT_S3_SECRET):
    # The run's job id holds the batch's lease: a retried step resumes it, another run takes it only once expired.
    check = check_inbox(inbox=inbox, registry=registry, config_yaml=config_yaml,
                        holder=dsl.PIPELINE_JOB_ID_PLACEHOLDER, s3_endpoint=s3_endpoint)
    light = [check]
    with dsl.If(check.output != "", name="new-batch"):
        run = open_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                       config_yaml=config_yaml, s3_endpoint=s3_endpoint)
        update = incremental_update(data=data, run_store=run.output, config_yaml=config_yaml, registry=registry,
                                    inbox=inbox, batch=check.output, holder=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                    s3_endpoint=s3_endpoint)
        light.append(run)
    for task in light:
        light_step(task)
    gpu_step(update)
    for task in [*light, update]:
        uncached(with_store_credentials(task, s3_secret))
