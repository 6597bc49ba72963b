from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def propagate_refine(data: str, run_store: str, config_yaml: str, shard: int, shards: int, seeds: Input[Dataset],
                     levels: Input[Dataset], pseudo_masks: Output[Dataset], s3_endpoint: str = ""):
    """One shard's walked maps refined as refine refines CAMs, at the `levels` chosen for all (when
    affinity.enabled; else the seeds are the pseudo masks)."""
    from wsseg.runtime.pipeline_io import run_shard_task

    run_shard_task("propagate-refine", data, run_store, config_yaml, {"masks": seeds}, pseudo_masks, shard, shards,
                   s3_endpoint)
