from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def group_instances(data: str, run_store: str, config_yaml: str, cams: Input[Dataset], pseudo_masks: Input[Dataset],
                    irn: Input[Model], instance_labels: Output[Dataset], s3_endpoint: str = ""):
    """Instance pseudo labels: the CAMs grouped by IRNet's centroids and walked within its boundaries."""
    from wsseg.runtime.pipeline_io import run_step

    run_step("group-instances", data, run_store, config_yaml, {"cams": cams, "masks": pseudo_masks, "irn": irn},
             instance_labels, s3_endpoint)
