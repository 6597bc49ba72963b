from kfp import dsl
from kfp.dsl import Model, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def train_classifier(data: str, run_store: str, config_yaml: str, classifier: Output[Model],
                     s3_endpoint: str = ""):
    """Multi-label classifier on image-level labels, the source of the CAMs."""
    from wsseg.runtime.pipeline_io import run_step

    run_step("train-classifier", data, run_store, config_yaml, {}, classifier, s3_endpoint)
