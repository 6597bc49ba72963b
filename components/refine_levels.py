from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def refine_levels(data: str, run_store: str, config_yaml: str, cams: Input[Dataset], levels: Output[Dataset],
                  s3_endpoint: str = ""):
    """The CRF passes' per-class levels, once for every shard, from the CAMs' summed histograms."""
    from wsseg.runtime.pipeline_io import run_shard_task

    run_shard_task("refine-levels", data, run_store, config_yaml, {"cams": cams}, levels, s3_endpoint=s3_endpoint)
