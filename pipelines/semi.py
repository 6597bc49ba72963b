"""Semi-supervised segmentation (docs/METHODS.md §3): the same segmenter trained on the labelled subset alone (the
baseline), with ClassMix's mean teacher on the other train images too, on the labelled subset alone for as many
iterations as ClassMix (`continued`), and on every train image's mask for as many (`all_labels`, the upper bound),
each evaluated on val.

`semi.labelled` in the config picks the subset (`wsseg.semi.labelled`); each branch runs in its own prefix of the run's
store (`<run>/baseline/`, `<run>/continued/`, `<run>/classmix/`, `<run>/all_labels/`) with its own config. The
other branches start from the baseline's trained segmenter (`semi.warm_start`), so the baseline trains first. The
config arrives at run time, so the DAG always hands the baseline's segmenter on; with `semi.warm_start: false` the
trainings ignore it and start from the preset's initial weights, still after the baseline. The continued branch
then repeats the baseline; it still runs rather than sit under a dsl.If, which would need the warm start read out of
the config by a step of its own, would nest the branch in a sub-DAG unlike its siblings, and would leave the run's
table to tell a skipped branch from a failed one, all to save one training in a setting that is not the default.
"""
from kfp import dsl

from components.evaluate import evaluate
from components.open_run import open_run
from components.open_semi_branch import open_semi_branch
from components.train_segmenter import train_segmenter
from pipelines.cluster import DEFAULT_S3_SECRET, gpu_step, light_step, uncached, with_store_credentials
from wsseg.semi.labelled import BRANCH_MODES


@dsl.pipeline(name="semi", description="Segmenter on a labelled subset: alone, alone for as long as ClassMix, "
                                       "with ClassMix on the other images, and on all labels (upper bound)")
def semi(data: str, store_uri: str, config_yaml: str = "preset: gpu", run_name: str = "",
         s3_endpoint: str = "", s3_secret: str = DEFAULT_S3_SECRET):
    run = open_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                   config_yaml=config_yaml, s3_endpoint=s3_endpoint)
    tasks = {"light": [run], "gpu": []}
    segmenters = {}
    for name in BRANCH_MODES:
        branch = open_semi_branch(run_store=run.output, branch=name, config_yaml=config_yaml, s3_endpoint=s3_endpoint)
        common = {"data": data, "run_store": branch.outputs["run_store"],
                  "config_yaml": branch.outputs["config_yaml"], "s3_endpoint": s3_endpoint}
        warm_start = {"init_segmenter": segmenters["baseline"].outputs["segmenter"]} if name != "baseline" else {}
        segmenters[name] = train_segmenter(**common, **warm_start)
        evaluation = evaluate(segmenter=segmenters[name].outputs["segmenter"], **common)
        tasks["light"] += [branch, evaluation]
        tasks["gpu"].append(segmenters[name])
    for task in tasks["light"]:
        light_step(task)
    for task in tasks["gpu"]:
        gpu_step(task)
    for task in tasks["light"] + tasks["gpu"]:
        uncached(with_store_credentials(task, s3_secret))
