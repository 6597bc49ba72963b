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
from components.merge_evaluation import merge_evaluation
from components.open_run import open_run
from components.open_semi_branch import open_semi_branch
from components.plan_shards import plan_shards
from components.train_segmenter import train_segmenter
from pipelines.cluster import DEFAULT_S3_SECRET, set_resources
from pipelines.sharding import fan_out
from wsseg.semi.labelled import BRANCH_MODES


def build_semi(parallelism: int = 0):
    @dsl.pipeline(name="semi", description="Segmenter on a labelled subset: alone, alone for as long as ClassMix, "
                                           "with ClassMix on the other images, and on all labels (upper bound)")
    def semi(data: str, store_uri: str, config_yaml: str = "preset: gpu", run_name: str = "", shards: int = 0,
             s3_endpoint: str = "", s3_secret: str = DEFAULT_S3_SECRET):
        run = open_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                       config_yaml=config_yaml, s3_endpoint=s3_endpoint)
        tasks = {"light": [run], "gpu": [], "cpu": []}
        segmenters = {}
        for name in BRANCH_MODES:
            branch = open_semi_branch(run_store=run.output, branch=name, config_yaml=config_yaml,
                                      s3_endpoint=s3_endpoint)
            whole = {"data": data, "run_store": branch.outputs["run_store"],
                     "config_yaml": branch.outputs["config_yaml"], "s3_endpoint": s3_endpoint}
            warm_start = {"init_segmenter": segmenters["baseline"].outputs["segmenter"]} if name != "baseline" else {}
            segmenters[name] = train_segmenter(**whole, **warm_start)
            plan = plan_shards(run_store=branch.outputs["run_store"], config_yaml=branch.outputs["config_yaml"],
                               shards=shards)
            scoring, parts = fan_out(plan, evaluate, "scores", parallelism,
                                     segmenter=segmenters[name].outputs["segmenter"], data=data,
                                     s3_endpoint=s3_endpoint)
            evaluation = merge_evaluation(parts=parts, **whole)
            tasks["light"] += [branch, plan, evaluation]
            tasks["gpu"] += [segmenters[name], scoring]
        set_resources(tasks, s3_secret)

    return semi


semi = build_semi()
