from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def refine(data: str, run_store: str, config_yaml: str, shard: int, shards: int, cams: Input[Dataset],
           levels: Input[Dataset], pseudo_masks: Output[Dataset], s3_endpoint: str = ""):
    """Dense-CRF pseudo masks of one shard's images at the `levels` chosen for all, uncertain pixels marked 255."""
    from wsseg.runtime.pipeline_io import run_shard_task

    run_shard_task("refine", data, run_store, config_yaml, {"cams": cams}, pseudo_masks, shard, shards, s3_endpoint)
