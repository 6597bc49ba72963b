from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def propagate(data: str, run_store: str, config_yaml: str, cams: Input[Dataset], seeds: Input[Dataset],
              affinity: Input[Model], pseudo_masks: Output[Dataset], s3_endpoint: str = ""):
    """CAMs random-walked over the learned affinities and refined again (when affinity.enabled); else the seeds."""
    from wsseg.runtime.pipeline_io import run_step

    run_step("propagate", data, run_store, config_yaml, {"cams": cams, "masks": seeds, "affinity": affinity},
             pseudo_masks, s3_endpoint)
