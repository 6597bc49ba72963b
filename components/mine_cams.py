from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def mine_cams(data: str, run_store: str, config_yaml: str, shard: int, shards: int, classifier: Input[Model],
              cams: Output[Dataset], s3_endpoint: str = ""):
    """Class activation maps of one shard's images, multi-scale and flipped, one float16 file per image."""
    from wsseg.runtime.pipeline_io import run_shard_task

    run_shard_task("mine-cams", data, run_store, config_yaml, {"classifier": classifier}, cams, shard, shards,
                   s3_endpoint)
