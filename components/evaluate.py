from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def evaluate(data: str, run_store: str, config_yaml: str, shard: int, shards: int, segmenter: Input[Model],
             scores: Output[Dataset], cams: Input[Dataset] = None, pseudo_masks: Input[Dataset] = None,
             s3_endpoint: str = ""):
    """One shard's confusion counts of the CAMs, the pseudo masks and the segmenter, and its first overlays."""
    from wsseg.runtime.pipeline_io import run_shard_task

    inputs = {"cams": cams, "pseudo_masks": pseudo_masks, "segmenter": segmenter}
    run_shard_task("evaluate", data, run_store, config_yaml, inputs, scores, shard, shards, s3_endpoint)
