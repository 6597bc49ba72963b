"""A per-image step as a pipeline runs it: one task per shard under `dsl.ParallelFor`, then tasks over all of them.

The loop's items come from the `plan-shards` task (`wsseg.runtime.pipeline_io.plan_shards`): each names its shard
and carries the run's store and config, which a shard task takes from its item alone.
"""
from kfp import dsl


def fan_out(plan: dsl.PipelineTask, component, output: str, parallelism: int, **inputs):
    """`component` once per shard of `plan`, in parallel (`parallelism` at most at once, 0: no limit); the shard
    task, and its `output`s collected for the task after the loop."""
    with dsl.ParallelFor(plan.output, parallelism=parallelism) as shard:
        part = component(run_store=shard.run_store, config_yaml=shard.config_yaml, shard=shard.shard,
                         shards=shard.shards, **inputs)
    return part, dsl.Collected(part.outputs[output])
