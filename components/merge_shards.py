from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def merge_shards(task: str, data: str, run_store: str, config_yaml: str, parts: Input[list[Dataset]],
                 merged: Output[Dataset], masks: Input[Dataset] = None, s3_endpoint: str = ""):
    """A light task after a step's shards (`parts`): their summaries summed, or the statistics they kept reduced
    (merge-mine-cams, propagate-levels, merge-refine, merge-propagate, merge-predict)."""
    from wsseg.runtime.pipeline_io import run_shard_task

    run_shard_task(task, data, run_store, config_yaml, {"masks": masks}, merged, shards=len(parts),
                   s3_endpoint=s3_endpoint)
