"""The ablation (docs/METHODS.md §1): the wsss pipeline once per method, in parallel, on the same data, and the
fully supervised upper bound once; one table at the end.

`build_ablation(parallelism)` makes the pipeline: a cluster runs every method, and every shard of a method's
per-image steps, at once (0, no limit); locally `wsseg run ablation` runs them one after another, so each method's
minutes are its own.
"""

from kfp import dsl

from components.ablation_table import ablation_table
from components.open_method_run import open_method_run
from components.open_run import open_run
from pipelines.cluster import DEFAULT_S3_SECRET, set_resources
from pipelines.supervised import supervised_tasks
from pipelines.wsss import wsss_tasks
from wsseg.wsss.ablation import UPPER_BOUND


def build_ablation(parallelism: int = 0):
    @dsl.pipeline(name="ablation", description="The wsss pipeline once per method, and one table of their figures")
    def ablation(data: str, store_uri: str, methods: list[str] = ["cam"], config_yaml: str = "preset: gpu",  # noqa: B006
                 run_name: str = "", shards: int = 0, s3_endpoint: str = "", s3_secret: str = DEFAULT_S3_SECRET):
        run = open_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                       config_yaml=config_yaml, s3_endpoint=s3_endpoint)
        upper = open_run(store_uri=run.output, run_name=UPPER_BOUND, job_id=UPPER_BOUND, config_yaml=config_yaml,
                         s3_endpoint=s3_endpoint)
        tasks, upper_evaluation = supervised_tasks(data, upper.output, config_yaml, shards, s3_endpoint, parallelism)
        tasks["light"] += [run, upper]
        with dsl.ParallelFor(methods, parallelism=parallelism) as method:
            # The run's prefix is rebuilt from the pipeline's parameters, not taken from `run`'s output: kfp.local
            # (2.17) hands a loop's tasks the loop item in place of an outer task's output.
            branch = open_method_run(store_uri=store_uri, run_name=run_name, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                     method=method, config_yaml=config_yaml, s3_endpoint=s3_endpoint).after(run)
            method_tasks, made = wsss_tasks(data, branch.outputs["run_store"], branch.outputs["config_yaml"],
                                                  shards, s3_endpoint, parallelism)
            tasks["light"].append(branch)
            for group, members in method_tasks.items():
                tasks[group] += members
        table = ablation_table(run_store=run.output, methods=methods,
                               evaluations=dsl.Collected(made["evaluation"].outputs["evaluation"]),
                               upper_bound=upper_evaluation.outputs["evaluation"], s3_endpoint=s3_endpoint)
        tasks["light"].append(table)
        set_resources(tasks, s3_secret)

    return ablation


ablation = build_ablation()
