"""Weakly supervised segmentation from image-level labels (docs/METHODS.md §1):
classifier → CAMs → dense CRF → pseudo masks (→ affinity random walk → dense CRF, with `affinity.enabled`)
→ mmseg segmenter → evaluation. With `instances.enabled`, instances too (§1.20): IRNet on the classifier →
instance pseudo labels → IRN's heads on the segmenter, and the evaluation adds their mAP."""
from kfp import dsl

from components.evaluate import evaluate
from components.group_instances import group_instances
from components.mine_cams import mine_cams
from components.open_run import open_run
from components.propagate import propagate
from components.refine import refine
from components.train_affinity import train_affinity
from components.train_classifier import train_classifier
from components.train_instance_heads import train_instance_heads
from components.train_irn import train_irn
from components.train_segmenter import train_segmenter
from components.wants_instances import wants_instances
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
    scored = {"cams": cams.outputs["cams"], "pseudo_masks": masks.outputs["pseudo_masks"],
              "segmenter": segmenter.outputs["segmenter"]}
    switch = wants_instances(config_yaml=config_yaml)
    with dsl.If(switch.output == True, name="instances"):  # noqa: E712  (KFP builds the condition from ==)
        irn = train_irn(run_store=run_store, classifier=classifier.outputs["classifier"],
                        pseudo_masks=masks.outputs["pseudo_masks"], **common)
        labels = group_instances(run_store=run_store, cams=cams.outputs["cams"],
                                 pseudo_masks=masks.outputs["pseudo_masks"], irn=irn.outputs["irn"], **common)
        heads = train_instance_heads(run_store=run_store, segmenter=segmenter.outputs["segmenter"],
                                     instance_labels=labels.outputs["instance_labels"], **common)
        with_instances = evaluate(run_store=run_store, instance_labels=labels.outputs["instance_labels"],
                                  instances=heads.outputs["instances"], **scored, **common)
    with dsl.Else(name="semantic-only"):
        semantic_only = evaluate(run_store=run_store, **scored, **common)
    for task in (run, switch, with_instances, semantic_only):
        light_step(task)
    for task in (classifier, cams, affinity, masks, segmenter, irn, labels, heads):
        gpu_step(task)
    cpu_step(seeds, cpu="16")
    for task in (run, switch, classifier, cams, seeds, affinity, masks, segmenter, irn, labels, heads, with_instances,
                 semantic_only):
        uncached(with_store_credentials(task, s3_secret))
