from kfp import dsl
from kfp.dsl import Dataset, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def predict(segmenter: str, images: str, run_store: str, config_yaml: str, shard: int, shards: int,
            labels: Output[Dataset], s3_endpoint: str = ""):
    """Palette PNG masks (and overlays, class areas, COCO instances as the config asks) of one shard's images of a
    store prefix or manifest, by the segmenter stored at `segmenter`."""
    from wsseg.runtime.pipeline_io import run_shard_task, use_endpoint
    from wsseg.store import open_store

    use_endpoint(s3_endpoint)
    run_shard_task("predict", images, run_store, config_yaml, {}, labels, shard, shards, s3_endpoint,
                   extra={"segmenter": open_store(segmenter), "images": images})
