"""Weakly supervised segmentation from image-level labels (docs/METHODS.md §1):
classifier → CAMs → dense CRF → pseudo masks (→ affinity random walk → dense CRF, with `affinity.enabled`)
→ mmseg segmenter → evaluation."""
from kfp import dsl

from components.evaluate import evaluate
from components.mine_cams import mine_cams
from components.open_run import open_run
from components.propagate import propagate
from components.refine import refine
from components.train_affinity import train_affinity
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
    seeds = refine(run_store=run_store, cams=cams.outputs["cams"], **common)
    affinity = train_affinity(run_store=run_store, classifier=classifier.outputs["classifier"],
                              pseudo_masks=seeds.outputs["pseudo_masks"], **common)
    masks = propagate(run_store=run_store, cams=cams.outputs["cams"], seeds=seeds.outputs["pseudo_masks"],
                      affinity=affinity.outputs["affinity"], **common)
    segmenter = train_segmenter(run_store=run_store, pseudo_masks=masks.outputs["pseudo_masks"], **common)
    evaluation = evaluate(run_store=run_store, cams=cams.outputs["cams"],
                          pseudo_masks=masks.outputs["pseudo_masks"],
                          segmenter=segmenter.outputs["segmenter"], **common)
    for task in (run, evaluation):
        light_step(task)
    for task in (classifier, cams, affinity, masks, segmenter):
        gpu_step(task)
    cpu_step(seeds, cpu="16")
    for task in (run, classifier, cams, seeds, affinity, masks, segmenter, evaluation):
        uncached(with_store_credentials(task, s3_secret))
