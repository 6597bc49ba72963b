"""The fully supervised upper bound: the same segmenter config trained on ground-truth masks."""
from kfp import dsl

from components.evaluate import evaluate
from components.open_run import open_run
from components.train_segmenter import train_segmenter
from pipelines.cluster import DEFAULT_S3_SECRET, gpu_step, light_step, uncached, with_store_credentials


@dsl.pipeline(name="supervised", description="Segmenter trained on ground-truth masks (the upper bound)")
def supervised(data: str, store_uri: str, config_yaml: str = "preset: gpu", run_name: str = "",
               s3_endpoint: str = "", s3_secret: str = DEFAULT_S3_SECRET):
    common = {"data": data, "config_yaml": config_yaml, "s3_endpoint": s3_endpoint}
    run = open_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                   config_yaml=config_yaml, s3_endpoint=s3_endpoint)
    segmenter = train_segmenter(run_store=run.output, **common)
    evaluation = evaluate(run_store=run.output, segmenter=segmenter.outputs["segmenter"], **common)
    light_step(run)
    light_step(evaluation)
    gpu_step(segmenter)
    for task in (run, segmenter, evaluation):
        uncached(with_store_credentials(task, s3_secret))
