from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def train_affinity(data: str, run_store: str, config_yaml: str, classifier: Input[Model],
                   pseudo_masks: Input[Dataset], affinity: Output[Model], s3_endpoint: str = ""):
    """AffinityNet on the pseudo masks' confident pixels (when affinity.enabled; else nothing to do)."""
    from wsseg.runtime.pipeline_io import run_step

    run_step("train-affinity", data, run_store, config_yaml, {"classifier": classifier, "masks": pseudo_masks},
             affinity, s3_endpoint)
