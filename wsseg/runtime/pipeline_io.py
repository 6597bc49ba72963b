"""What a KFP component does around its one library call: open stores, run the step, publish the artifact.

A KFP artifact produced by a wsseg step is a pointer: its file holds the URI of the store prefix where the
step wrote its outputs. The outputs live in the run's store (not the KFP artifact folder) so that a retried
pod finds what an earlier attempt finished and resumes, on the local backend and on S3 alike. The dataset is
handed to the step as given (a local path or a store URI): the step reads what it needs from it, never a copy.

A per-image step split into shards runs as several tasks (`SHARD_TASKS`): `plan_shards` names them, each shard
task (`run_shard_task` with a shard) works on its slice, a reduce or merge task (`run_shard_task` with the number of
shards) reads what they all kept; the merge that ends the step writes its `step.json`, the time of all its tasks.
"""
from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
from pathlib import Path

from wsseg.classes import ClassList
from wsseg.config import dump_config, load_config_text
from wsseg.errors import WssegError
from wsseg.kube.train_job import train_as_job, wants_training_job
from wsseg.runtime.run_config import keep_run_config
from wsseg.runtime.shards import SHARDS_FOLDER, Shard, shard_count
from wsseg.runtime.step_clock import STEP_RECORD, StepClock
from wsseg.runtime.step_commands import MERGE_TASKS, SHARD_TASKS, STEPS
from wsseg.store import ArtifactStore, open_store

log = logging.getLogger(__name__)

PUBLISHED_STORE = "published_store"


def open_run(store_uri: str, run_name: str, config_yaml: str, s3_endpoint: str = "") -> str:
    """Create the run's store prefix, keep a copy of the config there (refused when the run there was started
    under other settings), and return the prefix's URI."""
    use_endpoint(s3_endpoint)
    if not run_name:
        raise WssegError("the run needs a name: pass run_name (the pipeline's job id by default)")
    run_store = open_store(store_uri).child(run_name)
    keep_run_config(run_store, dump_config(load_config_text(config_yaml)))
    log.info("run store %s", run_store.uri)
    return run_store.uri


def instances_enabled(config_yaml: str) -> bool:
    """Whether the config asks for the instance steps (`instances.enabled`)."""
    return bool(load_config_text(config_yaml)["instances"]["enabled"])


def run_step(command: str, data: str, run_store_uri: str, config_yaml: str,
             inputs: dict, output, s3_endpoint: str = "") -> dict:
    """Run one step of STEPS with its inputs taken from upstream pointer artifacts; publish `output`."""
    use_endpoint(s3_endpoint)
    module, function, input_names = STEPS[command]
    config = load_config_text(config_yaml)
    stores = {name: store_of(inputs[name]) if inputs.get(name) is not None else None for name in input_names}
    out = open_store(run_store_uri).child(command)
    with StepClock(out, command) as clock:
        if wants_training_job(config, command):
            summary = train_as_job(command, data, stores, out, config)
        else:
            step = getattr(importlib.import_module(module), function)
            summary = step(data, **stores, out=out, config=config,
                           classes=ClassList(config["classes"]), strict=config["strict"])
        clock.record(summary)
    # A step with nothing to do (propagate without affinity) hands its input on instead of an empty store.
    published = summary.pop(PUBLISHED_STORE, None)
    publish(output, open_store(published) if published else out, summary)
    return summary


def plan_shards(run_store_uri: str, config_yaml: str, shards: int = 0) -> list[dict]:
    """The shard tasks' loop items: each names its shard and carries the run's store and config, so that a task
    inside the loop takes nothing from a task outside it but artifacts (kfp.local 2.17 hands a loop's tasks the loop
    item in place of an outer task's parameter). `shards` (a pipeline parameter) overrides the config's when > 0."""
    count = shard_count(load_config_text(config_yaml), shards)
    return [{"run_store": run_store_uri, "config_yaml": config_yaml, "shard": index, "shards": count}
            for index in range(count)]


def run_shard_task(task: str, data: str, run_store_uri: str, config_yaml: str, inputs: dict, output,
                   shard: int | None = None, shards: int | None = None, s3_endpoint: str = "",
                   extra: dict | None = None) -> dict:
    """One task of a sharded step (`SHARD_TASKS[task]`): a shard (`shard` of `shards`) or a reduce over all of
    them (`shards` alone); `extra` holds arguments of the task's own (predict's images); publish `output`."""
    use_endpoint(s3_endpoint)
    module, function, input_names, folder = SHARD_TASKS[task]
    config = load_config_text(config_yaml)
    # A loop item's numbers reach a component as floats under kfp.local.
    shards = int(shards) if shards is not None else None
    part = Shard(int(shard), shards) if shard is not None else None
    out = open_store(run_store_uri).child(folder)
    context = dict(extra or {}, data_root=data, out=out, config=config, classes=ClassList(config["classes"]),
                   strict=config["strict"], shard=part, shards=shards,
                   **{name: store_of(inputs[name]) if inputs.get(name) is not None else None for name in input_names})
    step = getattr(importlib.import_module(module), function)
    with StepClock(out.child(part.folder if part else f"{SHARDS_FOLDER}/{task}"), task) as clock:
        summary = step(**{name: context[name] for name in inspect.signature(step).parameters if name in context})
        clock.record(summary)
    if task in MERGE_TASKS:
        record_step_time(out, task.removeprefix("merge-"), summary)
    published = summary.pop(PUBLISHED_STORE, None)
    publish(output, open_store(published) if published else out, summary)
    return summary


def record_step_time(out: ArtifactStore, command: str, summary: dict) -> None:
    """The step's `step.json`: the seconds of all its tasks (each shard's, the reduces', the merge's), summed as a
    run's table adds its steps', and the traffic they moved."""
    records = [json.loads(out.get_bytes(key)) for key in out.list(f"{SHARDS_FOLDER}/")
               if key.endswith(f"/{STEP_RECORD}")]
    traffic = {name: sum(record.get("store_traffic", {}).get(name, 0) for record in records)
               for name in records[0].get("store_traffic", {})} if records else {}
    out.put_bytes(STEP_RECORD, json.dumps({"command": command, "seconds": round(sum(r["seconds"] for r in records), 1),
                                           "tasks": len(records), "store_traffic": traffic, "summary": summary},
                                          indent=2, default=str).encode())


def use_endpoint(s3_endpoint: str) -> None:
    """On a cluster the pipeline names the S3 endpoint; locally the environment's AWS_ENDPOINT_URL stands."""
    if s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = s3_endpoint


def publish(artifact, store: ArtifactStore, summary: dict) -> None:
    """Write the pointer into the artifact and its one-line summary into the artifact's metadata."""
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(json.dumps({"store": store.uri}))
    artifact.metadata["store"] = store.uri
    for key, value in summary.items():
        if isinstance(value, (int, float, str, bool)):
            artifact.metadata[key] = value


def store_of(artifact) -> ArtifactStore:
    """The store a pointer artifact names; reads the pointer file, falling back on its metadata."""
    path = Path(artifact.path)
    if path.is_file():
        return open_store(json.loads(path.read_text())["store"])
    if "store" in artifact.metadata:
        return open_store(artifact.metadata["store"])
    raise WssegError(f"{path}: not a wsseg artifact pointer (no store URI in the file or metadata)")


def publish_evaluation(evaluation, metrics, report, summary) -> None:
    """Copy the evaluate step's figures and reports into KFP's Metrics, HTML and Markdown artifacts."""
    store = store_of(evaluation)
    for name, value in json.loads(store.get_bytes("metrics.json"))["headline"].items():
        if isinstance(value, (int, float)):
            metrics.log_metric(name, value)
    for artifact, key in ((report, "report.html"), (summary, "report.md")):
        Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
        Path(artifact.path).write_bytes(store.get_bytes(key))


def claim_oldest_batch(inbox_uri: str, registry_uri: str, config_yaml: str, holder: str, s3_endpoint: str = "") -> str:
    """check-inbox: the oldest inbox batch not processed yet that no other run holds, claimed for `holder` (the
    pipeline run) and checked against the registry's current version (`check_batch`), or "" when none is free.
    A batch the check refuses is released, so that every run stops on it until it is fixed, as the first did."""
    from wsseg.incremental.inbox import Inbox
    from wsseg.incremental.registry import ModelRegistry
    from wsseg.steps.incremental_update import check_batch

    use_endpoint(s3_endpoint)
    inbox = Inbox(open_store(inbox_uri))
    lease = inbox.claim_next(holder)
    if lease is None:
        return ""
    config = load_config_text(config_yaml)
    registry = ModelRegistry(open_store(registry_uri), config["registry"]["name"])
    try:
        check_batch(registry, inbox, lease.batch, ClassList(config["classes"]))
    except WssegError:
        inbox.release(lease)
        raise
    return lease.batch


def run_incremental_update(data: str, run_store_uri: str, config_yaml: str, registry_uri: str, inbox_uri: str,
                           batch: str, holder: str, output, metrics, summary, report, s3_endpoint: str = "") -> dict:
    """The incremental pipeline's update of one inbox batch (`wsseg.steps.incremental_update`), which `holder` (the
    pipeline run) claimed in check-inbox, into the run's
    `incremental-update/<batch>/` prefix; publish `output`, the gate's figures as `metrics` and its report, with
    the forgetting curve, as `summary` (Markdown) and `report` (HTML, the curve's PNG embedded)."""
    from wsseg.incremental.inbox import Inbox
    from wsseg.incremental.registry import ModelRegistry
    from wsseg.steps.incremental_update import REPORT, REPORT_HTML, headline, incremental_update

    use_endpoint(s3_endpoint)
    config = load_config_text(config_yaml)
    registry = ModelRegistry(open_store(registry_uri), config["registry"]["name"])
    out = open_store(run_store_uri).child("incremental-update").child(batch)
    with StepClock(out, "incremental-update") as clock:
        result = incremental_update(data, registry, Inbox(open_store(inbox_uri)), batch, out, config,
                                    ClassList(config["classes"]), strict=config["strict"], holder=holder)
        clock.record(result)
    figures = headline(result)
    publish(output, out, dict(figures, batch=batch))
    for name, value in figures.items():
        metrics.log_metric(name, value)
    for artifact, key in ((summary, REPORT), (report, REPORT_HTML)):
        Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
        Path(artifact.path).write_bytes(out.get_bytes(key))
    return result
