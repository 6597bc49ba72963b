from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def propagate(data: str, run_store: str, config_yaml: str, shard: int, shards: int, cams: Input[Dataset],
              seeds: Input[Dataset], affinity: Input[Model], walked: Output[Dataset], s3_endpoint: str = ""):
    """One shard's CAMs random-walked over the learned affinities (when affinity.enabled; else nothing to do)."""
    from wsseg.runtime.pipeline_io import run_shard_task

    run_shard_task("propagate", data, run_store, config_yaml, {"cams": cams, "masks": seeds, "affinity": affinity},
                   walked, shard, shards, s3_endpoint)
