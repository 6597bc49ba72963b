"""Weakly supervised segmentation from image-level labels (docs/METHODS.md §1):
classifier → CAMs → dense CRF → pseudo masks (→ affinity random walk → dense CRF, with `affinity.enabled`)
→ mmseg segmenter → evaluation. With `instances.enabled`, instances too (§1.20): IRNet on the classifier →
instance pseudo labels → IRN's heads on the segmenter, and the evaluation adds their mAP.

Every per-image step (mine-cams, refine, propagate, evaluate) runs as `shards` tasks under `dsl.ParallelFor`, each
on its slice of the images, then a light task over all of them (`pipelines.sharding`); refine and propagate choose
their thresholds once, between the CAMs' merge and their shards. `build_wsss(parallelism)` makes the pipeline: a
cluster runs every shard at once (0, no limit); locally `wsseg run wsss` runs them one after another.
"""
from kfp import dsl

from components.evaluate import evaluate
from components.evaluate_instances import evaluate_instances
from components.group_instances import group_instances
from components.merge_evaluation import merge_evaluation
from components.merge_shards import merge_shards
from components.mine_cams import mine_cams
from components.open_run import open_run
from components.plan_shards import plan_shards
from components.propagate import propagate
from components.propagate_refine import propagate_refine
from components.refine import refine
from components.refine_levels import refine_levels
from components.train_affinity import train_affinity
from components.train_classifier import train_classifier
from components.train_instance_heads import train_instance_heads
from components.train_irn import train_irn
from components.train_segmenter import train_segmenter
from components.wants_instances import wants_instances
from pipelines.cluster import DEFAULT_S3_SECRET, set_resources
from pipelines.sharding import fan_out


def wsss_tasks(data, run_store, config_yaml, shards, s3_endpoint, parallelism: int):
    """The semantic wsss DAG in the run's store `run_store`: its tasks by the resources they need (light, gpu, cpu),
    and its tasks whose outputs the steps after it take (classifier, cams, masks, segmenter, evaluation)."""
    common = {"data": data, "s3_endpoint": s3_endpoint}
    whole = dict(common, run_store=run_store, config_yaml=config_yaml)
    plan = plan_shards(run_store=run_store, config_yaml=config_yaml, shards=shards)
    classifier = train_classifier(**whole)
    cam_shards, cam_parts = fan_out(plan, mine_cams, "cams", parallelism, classifier=classifier.outputs["classifier"],
                                    **common)
    cams = merge_shards(task="merge-mine-cams", parts=cam_parts, **whole)
    seed_levels = refine_levels(cams=cams.outputs["merged"], **whole)
    seed_shards, seed_parts = fan_out(plan, refine, "pseudo_masks", parallelism, cams=cams.outputs["merged"],
                                      levels=seed_levels.outputs["levels"], **common)
    seeds = merge_shards(task="merge-refine", parts=seed_parts, **whole)
    affinity = train_affinity(classifier=classifier.outputs["classifier"], pseudo_masks=seeds.outputs["merged"],
                              **whole)
    walk_shards, walk_parts = fan_out(plan, propagate, "walked", parallelism, cams=cams.outputs["merged"],
                                      seeds=seeds.outputs["merged"], affinity=affinity.outputs["affinity"], **common)
    walk_levels = merge_shards(task="propagate-levels", parts=walk_parts, masks=seeds.outputs["merged"], **whole)
    mask_shards, mask_parts = fan_out(plan, propagate_refine, "pseudo_masks", parallelism,
                                      seeds=seeds.outputs["merged"], levels=walk_levels.outputs["merged"], **common)
    masks = merge_shards(task="merge-propagate", parts=mask_parts, masks=seeds.outputs["merged"], **whole)
    segmenter = train_segmenter(pseudo_masks=masks.outputs["merged"], **whole)
    score_shards, score_parts = fan_out(plan, evaluate, "scores", parallelism, cams=cams.outputs["merged"],
                                        pseudo_masks=masks.outputs["merged"],
                                        segmenter=segmenter.outputs["segmenter"], **common)
    evaluation = merge_evaluation(parts=score_parts, pseudo_masks=masks.outputs["merged"], **whole)
    tasks = {"light": [plan, cams, seed_levels, seeds, walk_levels, masks, evaluation],
             "gpu": [classifier, cam_shards, affinity, walk_shards, segmenter, score_shards],
             "cpu": [seed_shards, mask_shards]}
    return tasks, {"classifier": classifier, "cams": cams, "masks": masks, "segmenter": segmenter,
                   "evaluation": evaluation}


def build_wsss(parallelism: int = 0):
    @dsl.pipeline(name="wsss", description="Weakly supervised semantic segmentation from image-level labels")
    def wsss(data: str, store_uri: str, config_yaml: str = "preset: gpu", run_name: str = "", shards: int = 0,
             s3_endpoint: str = "", s3_secret: str = DEFAULT_S3_SECRET):
        run = open_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                       config_yaml=config_yaml, s3_endpoint=s3_endpoint)
        whole = {"data": data, "run_store": run.output, "config_yaml": config_yaml, "s3_endpoint": s3_endpoint}
        tasks, made = wsss_tasks(data, run.output, config_yaml, shards, s3_endpoint, parallelism)
        cams, masks = made["cams"].outputs["merged"], made["masks"].outputs["merged"]
        # The semantic evaluation's merge stays outside the condition: KFP cannot hand a loop's collected outputs
        # into a condition's tasks.
        switch = wants_instances(config_yaml=config_yaml)
        with dsl.If(switch.output == True, name="instances"):  # noqa: E712  (KFP builds the condition from ==)
            irn = train_irn(classifier=made["classifier"].outputs["classifier"], pseudo_masks=masks, **whole)
            labels = group_instances(cams=cams, pseudo_masks=masks, irn=irn.outputs["irn"], **whole)
            heads = train_instance_heads(segmenter=made["segmenter"].outputs["segmenter"],
                                         instance_labels=labels.outputs["instance_labels"], **whole)
            scored = evaluate_instances(semantic=made["evaluation"].outputs["evaluation"], cams=cams,
                                        pseudo_masks=masks, instance_labels=labels.outputs["instance_labels"],
                                        instances=heads.outputs["instances"], **whole)
        tasks["light"] += [run, switch, scored]
        tasks["gpu"] += [irn, labels, heads]
        set_resources(tasks, s3_secret)

    return wsss


wsss = build_wsss()
