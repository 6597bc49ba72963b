from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def train_instance_heads(data: str, run_store: str, config_yaml: str, segmenter: Input[Model],
                         instance_labels: Input[Dataset], instances: Output[Model], s3_endpoint: str = ""):
    """The instance model: IRN's displacement and boundary heads on the frozen segmenter, from the instance labels."""
    from wsseg.runtime.pipeline_io import run_step

    run_step("train-instance-heads", data, run_store, config_yaml,
             {"segmenter": segmenter, "instance_labels": instance_labels}, instances, s3_endpoint)
