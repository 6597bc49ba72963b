from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def train_irn(data: str, run_store: str, config_yaml: str, classifier: Input[Model], pseudo_masks: Input[Dataset],
              irn: Output[Model], s3_endpoint: str = ""):
    """IRNet's displacement and boundary branches on the classifier, from the pseudo masks' inter-pixel relations."""
    from wsseg.runtime.pipeline_io import run_step

    run_step("train-irn", data, run_store, config_yaml, {"classifier": classifier, "masks": pseudo_masks}, irn,
             s3_endpoint)
