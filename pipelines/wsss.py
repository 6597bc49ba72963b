"""Weakly supervised segmentation from image-level labels (METHODS.md §1):
classifier → CAMs → dense CRF → pseudo masks → mmseg segmenter → evaluation."""
from kfp import dsl

from components.evaluate import evaluate
from components.mine_cams import mine_cams
from components.open_run import open_run
from components.refine import refine
from components.train_classifier import train_classifier
from components.train_segmenter import train_segmenter
from pipelines.cluster import DEFAULT_S3_SECRET, cpu_step, gpu_step, light_step, uncached, with_store_credentials


@dsl.pipeline(name="wsss", description="Weakly supervised semantic segmentation from image-level labels")
def wsss(data: str, store_uri: str, config_yaml: str = "preset: gpu", run_name: str = "",
         s3_endpoint: str = "", s3_secret: str = DEFAULT_S3_SECRET):
    common = {"data": data, "config_yaml": config_yaml, "s3_endpoint": s3_endpoint}
    run = open_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                   config_yaml=config_yaml, s3_endpoint=s3_endpoint)
    run_store = run.output
    classifier = train_classifier(run_store=run_store, **common)
    cams = mine_cams(run_store=run_store, classifier=classifier.outputs["classifier"], **common)
    masks = refine(run_store=run_store, cams=cams.outputs["cams"], **common)
    segmenter = train_segmenter(run_store=run_store, pseudo_masks=masks.outputs["pseudo_masks"], **common)
    evaluation = evaluate(run_store=run_store, cams=cams.outputs["cams"],
                          pseudo_masks=masks.outputs["pseudo_masks"],
                          segmenter=segmenter.outputs["segmenter"], **common)
    for task in (run, evaluation):
        light_step(task)
    for task in (classifier, cams, segmenter):
        gpu_step(task)
    cpu_step(masks, cpu="16")
    for task in (run, classifier, cams, masks, segmenter, evaluation):
        uncached(with_store_credentials(task, s3_secret))
