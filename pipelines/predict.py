"""Batch labelling: a trained segmenter (train-segmenter's store) over a store prefix or manifest of images."""
from kfp import dsl

from components.open_run import open_run
from components.predict import predict
from pipelines.cluster import DEFAULT_S3_SECRET, gpu_step, light_step, uncached, with_store_credentials


@dsl.pipeline(name="predict", description="Label images with a trained segmenter: masks, overlays, areas, instances")
def label_images(segmenter: str, images: str, store_uri: str, config_yaml: str = "preset: gpu", run_name: str = "",
                 s3_endpoint: str = "", s3_secret: str = DEFAULT_S3_SECRET):
    run = open_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                   config_yaml=config_yaml, s3_endpoint=s3_endpoint)
    labelling = predict(segmenter=segmenter, images=images, run_store=run.output, config_yaml=config_yaml,
                        s3_endpoint=s3_endpoint)
    light_step(run)
    gpu_step(labelling)
    for task in (run, labelling):
        uncached(with_store_credentials(task, s3_secret))
