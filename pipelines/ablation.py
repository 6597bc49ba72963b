"""The ablation (docs/METHODS.md §1): the wsss pipeline once per method, in parallel, on the same data, and the
fully supervised upper bound once; one table at the end.

`build_ablation(parallelism)` makes the pipeline: a cluster runs every method at once (0, no limit); locally
`wsseg run ablation` runs them one after another, so each method's minutes are its own.
"""

from kfp import dsl

from components.ablation_table import ablation_table
from components.evaluate import evaluate
from components.mine_cams import mine_cams
from components.open_method_run import open_method_run
from components.open_run import open_run
from components.propagate import propagate
from components.refine import refine
from components.train_affinity import train_affinity
from components.train_classifier import train_classifier
from components.train_segmenter import train_segmenter
from pipelines.cluster import DEFAULT_S3_SECRET, cpu_step, gpu_step, light_step, uncached, with_store_credentials
from wsseg.wsss.ablation import UPPER_BOUND


def build_ablation(parallelism: int = 0):
    @dsl.pipeline(name="ablation", description="The wsss pipeline once per method, and one table of their figures")
    def ablation(data: str, store_uri: str, methods: list[str] = ["cam"], config_yaml: str = "preset: gpu",  # noqa: B006
                 run_name: str = "", s3_endpoint: str = "", s3_secret: str = DEFAULT_S3_SECRET):
        run = open_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                       config_yaml=config_yaml, s3_endpoint=s3_endpoint)
        upper = open_run(store_uri=run.output, run_name=UPPER_BOUND, job_id=UPPER_BOUND, config_yaml=config_yaml,
                         s3_endpoint=s3_endpoint)
        upper_common = {"data": data, "run_store": upper.output, "config_yaml": config_yaml, "s3_endpoint": s3_endpoint}
        upper_segmenter = train_segmenter(**upper_common)
        upper_evaluation = evaluate(segmenter=upper_segmenter.outputs["segmenter"], **upper_common)
        tasks = {"light": [run, upper, upper_evaluation], "gpu": [upper_segmenter], "cpu": []}
        with dsl.ParallelFor(methods, parallelism=parallelism) as method:
            # The run's prefix is rebuilt from the pipeline's parameters, not taken from `run`'s output: kfp.local
            # (2.17) hands a loop's tasks the loop item in place of an outer task's output.
            branch = open_method_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                     method=method, config_yaml=config_yaml, s3_endpoint=s3_endpoint).after(run)
            common = {"data": data, "run_store": branch.outputs["run_store"],
                      "config_yaml": branch.outputs["config_yaml"], "s3_endpoint": s3_endpoint}
            classifier = train_classifier(**common)
            cams = mine_cams(classifier=classifier.outputs["classifier"], **common)
            seeds = refine(cams=cams.outputs["cams"], **common)
            affinity = train_affinity(classifier=classifier.outputs["classifier"],
                                      pseudo_masks=seeds.outputs["pseudo_masks"], **common)
            masks = propagate(cams=cams.outputs["cams"], seeds=seeds.outputs["pseudo_masks"],
                              affinity=affinity.outputs["affinity"], **common)
            segmenter = train_segmenter(pseudo_masks=masks.outputs["pseudo_masks"], **common)
            evaluation = evaluate(cams=cams.outputs["cams"], pseudo_masks=masks.outputs["pseudo_masks"],
                                  segmenter=segmenter.outputs["segmenter"], **common)
            tasks["light"] += [branch, evaluation]
            tasks["gpu"] += [classifier, cams, affinity, masks, segmenter]
            tasks["cpu"] += [seeds]
        table = ablation_table(run_store=run.output, methods=methods,
                               evaluations=dsl.Collected(evaluation.outputs["evaluation"]),
                               upper_bound=upper_evaluation.outputs["evaluation"], s3_endpoint=s3_endpoint)
        tasks["light"].append(table)
        for task in tasks["light"]:
            light_step(task)
        for task in tasks["gpu"]:
            gpu_step(task)
        for task in tasks["cpu"]:
            cpu_step(task, cpu="16")
        for task in (task for group in tasks.values() for task in group):
            uncached(with_store_credentials(task, s3_secret))

    return ablation


ablation = build_ablation()
