"""The fully supervised upper bound: the same segmenter config trained on ground-truth masks, scored by shards."""
from kfp import dsl

from components.evaluate import evaluate
from components.merge_evaluation import merge_evaluation
from components.open_run import open_run
from components.plan_shards import plan_shards
from components.train_segmenter import train_segmenter
from pipelines.cluster import DEFAULT_S3_SECRET, set_resources
from pipelines.sharding import fan_out


def supervised_tasks(data, run_store, config_yaml, shards, s3_endpoint, parallelism: int):
    """Train on the ground truth in `run_store` and evaluate by shards: the tasks by the resources they need, and
    the evaluation."""
    common = {"data": data, "s3_endpoint": s3_endpoint}
    whole = dict(common, run_store=run_store, config_yaml=config_yaml)
    plan = plan_shards(run_store=run_store, config_yaml=config_yaml, shards=shards)
    segmenter = train_segmenter(**whole)
    score_shards, score_parts = fan_out(plan, evaluate, "scores", parallelism,
                                        segmenter=segmenter.outputs["segmenter"], **common)
    evaluation = merge_evaluation(parts=score_parts, **whole)
    return {"light": [plan, evaluation], "gpu": [segmenter, score_shards], "cpu": []}, evaluation


def build_supervised(parallelism: int = 0):
    @dsl.pipeline(name="supervised", description="Segmenter trained on ground-truth masks (the upper bound)")
    def supervised(data: str, store_uri: str, config_yaml: str = "preset: gpu", run_name: str = "", shards: int = 0,
                   s3_endpoint: str = "", s3_secret: str = DEFAULT_S3_SECRET):
        run = open_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                       config_yaml=config_yaml, s3_endpoint=s3_endpoint)
        tasks, _ = supervised_tasks(data, run.output, config_yaml, shards, s3_endpoint, parallelism)
        tasks["light"].append(run)
        set_resources(tasks, s3_secret)

    return supervised


supervised = build_supervised()
