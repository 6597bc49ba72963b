from kfp import dsl
from kfp.dsl import Dataset, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def predict(segmenter: str, images: str, run_store: str, config_yaml: str, labels: Output[Dataset],
            s3_endpoint: str = ""):
    """Palette PNG masks (and overlays, class areas, COCO instances as the config asks) of every image in a store
    prefix or manifest, by the segmenter stored at `segmenter`."""
    from wsseg.runtime.pipeline_io import run_predict

    run_predict(segmenter, images, run_store, config_yaml, labels, s3_endpoint)
