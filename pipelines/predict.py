"""Batch labelling: a trained segmenter (train-segmenter's store) over a store prefix or manifest of images, as
`shards` tasks under `dsl.ParallelFor`, each on its slice of the images, then one merge (the summary, the COCO
instances)."""
from kfp import dsl

from components.merge_shards import merge_shards
from components.open_run import open_run
from components.plan_shards import plan_shards
from components.predict import predict
from pipelines.cluster import DEFAULT_S3_SECRET, set_resources
from pipelines.sharding import fan_out


def build_predict(parallelism: int = 0):
    @dsl.pipeline(name="predict",
                  description="Label images with a trained segmenter: masks, overlays, areas, instances")
    def label_images(segmenter: str, images: str, store_uri: str, config_yaml: str = "preset: gpu",
                     run_name: str = "", shards: int = 0, s3_endpoint: str = "", s3_secret: str = DEFAULT_S3_SECRET):
        run = open_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                       config_yaml=config_yaml, s3_endpoint=s3_endpoint)
        plan = plan_shards(run_store=run.output, config_yaml=config_yaml, shards=shards)
        labelling, parts = fan_out(plan, predict, "labels", parallelism, segmenter=segmenter, images=images,
                                   s3_endpoint=s3_endpoint)
        merged = merge_shards(task="merge-predict", data=images, run_store=run.output, config_yaml=config_yaml,
                              parts=parts, s3_endpoint=s3_endpoint)
        set_resources({"light": [run, plan, merged], "gpu": [labelling], "cpu": []}, s3_secret)

    return label_images


label_images = build_predict()
