"""`wsseg compile` writes every pipeline's IR YAML, and what a cluster needs is in it."""
import re

import pytest
import yaml

from pipelines import PIPELINES
from wsseg.runtime.compile_pipelines import compile_pipelines

GPU_COMPONENTS = ("train-classifier", "mine-cams", "train-segmenter", "predict", "incremental-update", "train-irn",
                  "group-instances", "train-instance-heads")


SENTINEL_KEY_ID = "SENTINELKEYID4242"
SENTINEL_SECRET = "sentinel/Secret+Value/4242"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    # Credentials present in the compiling environment must not leak into the YAML.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", SENTINEL_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", SENTINEL_SECRET)
        paths = compile_pipelines(tmp_path_factory.mktemp("compiled"))
    return {path.stem: (path.read_text(), list(yaml.safe_load_all(path.read_text()))) for path in paths}


def executors(documents):
    pipeline_spec = documents[0]
    return pipeline_spec["deploymentSpec"]["executors"]


def kubernetes_executors(documents):
    platform = next(doc for doc in documents if "platforms" in doc)
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_every_pipeline_is_compiled(compiled):
    assert set(compiled) == set(PIPELINES)


def test_gpu_steps_ask_for_a_gpu(compiled):
    for name, (_, documents) in compiled.items():
        gpu_executors = [key for key in executors(documents) if any(c in key for c in GPU_COMPONENTS)]
        assert gpu_executors, f"{name}: no GPU step found"
        for key in gpu_executors:
            resources = executors(documents)[key]["container"]["resources"]
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu", (name, key)
            assert int(resources["accelerator"]["resourceCount"]) >= 1, (name, key)


def test_refine_asks_for_cpus_not_a_gpu(compiled):
    resources = next(spec["container"]["resources"] for key, spec in executors(compiled["wsss"][1]).items()
                     if "refine" in key)
    assert "accelerator" not in resources
    assert float(resources["resourceCpuRequest"]) >= 4


def test_credentials_come_from_the_secret(compiled):
    for name, (_, documents) in compiled.items():
        for key, spec in kubernetes_executors(documents).items():
            env = {item["envVar"]: item["secretKey"] for secret in spec["secretAsEnv"]
                   for item in secret["keyToEnv"]}
            assert env == {"AWS_ACCESS_KEY_ID": "accesskey", "AWS_SECRET_ACCESS_KEY": "secretkey"}, (name, key)
            names = {secret["secretNameParameter"]["componentInputParameter"] for secret in spec["secretAsEnv"]}
            # Inside a ParallelFor the same parameter reaches the loop's tasks as a pipeline channel.
            assert names <= {"s3_secret", "pipelinechannel--s3_secret"} and len(names) == 1, \
                f"{name}/{key}: the secret's name must be the s3_secret parameter"


def test_no_literal_credential_in_any_yaml(compiled):
    for name, (text, documents) in compiled.items():
        assert SENTINEL_KEY_ID not in text and SENTINEL_SECRET not in text, name
        assert not re.search(r"AKIA[0-9A-Z]{12,}|minio123", text), name
        for key, spec in executors(documents).items():
            literal_env = {item["name"] for item in spec["container"].get("env", [])}
            assert not literal_env & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, (name, key)


def test_gpu_steps_get_shared_memory_and_retries(compiled):
    documents = compiled["wsss"][1]
    for key, spec in kubernetes_executors(documents).items():
        if any(c in key for c in GPU_COMPONENTS):
            assert spec["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
            assert spec["emptyDirMounts"][0]["medium"] == "Memory"
    # Shard tasks sit in their loop's component, the others in the root DAG.
    dags = [documents[0]["root"]["dag"], *(c["dag"] for c in documents[0]["components"].values() if "dag" in c)]
    tasks = {name: task for dag in dags for name, task in dag["tasks"].items()}
    assert all("retryPolicy" in tasks[name] for name in ("train-classifier", "mine-cams", "refine", "train-segmenter"))


def test_the_wsss_instance_steps_run_behind_the_configs_setting(compiled):
    pipeline = compiled["wsss"][1][0]
    tasks = {task["taskInfo"]["name"]: task for task in pipeline["root"]["dag"]["tasks"].values()}
    # The semantic evaluation's merge runs either way; the instance steps add their figures to it.
    assert {"wants-instances", "merge-evaluation"} <= set(tasks)
    branch = tasks["instances"]
    condition = branch["triggerPolicy"]["condition"]
    assert "wants-instances-Output" in condition and condition.endswith("== true")
    inside = pipeline["components"][branch["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inside) == {"train-irn", "group-instances", "train-instance-heads", "evaluate-instances"}
    assert set(inside["evaluate-instances"]["inputs"]["artifacts"]) == {"semantic", "cams", "pseudo_masks",
                                                                        "instance_labels", "instances"}
    channel = inside["evaluate-instances"]["inputs"]["artifacts"]["semantic"]["componentInputArtifact"]
    assert branch["inputs"]["artifacts"][channel]["taskOutputArtifact"]["producerTask"] == "merge-evaluation"


def test_the_incremental_pipeline_updates_only_when_the_inbox_has_a_batch(compiled):
    tasks = {task["taskInfo"]["name"]: task for task in compiled["incremental"][1][0]["root"]["dag"]["tasks"].values()}
    assert set(tasks) == {"check-inbox", "new-batch"}
    condition = tasks["new-batch"]["triggerPolicy"]["condition"]
    assert "check-inbox-Output" in condition and "!= ''" in condition
    # The run's job id holds the batch's lease, from the claim in check-inbox to the update's end.
    update = compiled["incremental"][1][0]["components"]["comp-condition-1"]["dag"]["tasks"]["incremental-update"]
    for task in (tasks["check-inbox"], update):
        assert task["inputs"]["parameters"]["holder"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}


def test_the_other_semi_trainings_start_from_the_baseline_segmenter(compiled):
    tasks = compiled["semi"][1][0]["root"]["dag"]["tasks"]

    def branch_of(task: dict) -> str:
        opened = task["inputs"]["parameters"]["run_store"]["taskOutputParameter"]["producerTask"]
        return tasks[opened]["inputs"]["parameters"]["branch"]["runtimeValue"]["constant"]

    trainings = {branch_of(task): (name, task) for name, task in tasks.items() if name.startswith("train-segmenter")}
    assert set(trainings) == {"baseline", "continued", "classmix", "all_labels"}
    for branch in ("continued", "classmix", "all_labels"):
        init_segmenter = trainings[branch][1]["inputs"]["artifacts"]["init_segmenter"]["taskOutputArtifact"]
        assert init_segmenter == {"producerTask": trainings["baseline"][0], "outputArtifactKey": "segmenter"}
    assert "artifacts" not in trainings["baseline"][1]["inputs"]


# The per-image steps each pipeline must split into shards, and what each shard task asks of the cluster.
SHARDED_STEPS = {
    "wsss": {"mine-cams": "gpu", "refine": "cpu", "propagate": "gpu", "propagate-refine": "cpu", "evaluate": "gpu"},
    "ablation": {"mine-cams": "gpu", "refine": "cpu", "propagate": "gpu", "propagate-refine": "cpu",
                 "evaluate": "gpu"},
    "predict": {"predict": "gpu"},
}


def shard_loops(documents) -> dict[str, list[str]]:
    """Per loop over plan-shards' items (a ParallelFor over the shards, at any depth): the tasks it runs."""
    spec = documents[0]
    dags = [spec["root"]["dag"], *(component["dag"] for component in spec["components"].values() if "dag" in component)]
    loops = {}
    for dag in dags:
        for task in dag["tasks"].values():
            items = task.get("parameterIterator", {}).get("items", {}).get("inputParameter", "")
            if "plan-shards" in items:
                loop = spec["components"][task["componentRef"]["name"]]
                loops[task["taskInfo"]["name"]] = list(loop["dag"]["tasks"].values())
    return loops


def component_name(task: dict) -> str:
    return task["componentRef"]["name"].removeprefix("comp-").rstrip("-0123456789")


@pytest.mark.parametrize("pipeline", sorted(SHARDED_STEPS))
def test_per_image_steps_fan_out_over_the_shards_with_their_resources(compiled, pipeline):
    documents = compiled[pipeline][1]
    executors_ = executors(documents)
    components = documents[0]["components"]
    sharded = {}
    for tasks in shard_loops(documents).values():
        for task in tasks:
            sharded[component_name(task)] = components[task["componentRef"]["name"]]["executorLabel"]
    assert set(SHARDED_STEPS[pipeline]) <= set(sharded), f"{pipeline}: not under a ParallelFor over the shards"
    for step, kind in SHARDED_STEPS[pipeline].items():
        resources = executors_[sharded[step]]["container"]["resources"]
        if kind == "gpu":
            accelerator = resources.get("accelerator", {})
            assert accelerator.get("resourceType") == "nvidia.com/gpu", (pipeline, step)
            assert int(accelerator["resourceCount"]) == 1, (pipeline, step)
        else:
            assert "accelerator" not in resources and float(resources["resourceCpuRequest"]) >= 4, (pipeline, step)
