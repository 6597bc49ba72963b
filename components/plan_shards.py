from kfp import dsl

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def plan_shards(run_store: str, config_yaml: str, shards: int = 0) -> list:
    """The shards each per-image step splits into (`shards`, else the config's): one loop item per shard."""
    from wsseg.runtime.pipeline_io import plan_shards as shard_items

    return shard_items(run_store, config_yaml, shards)
