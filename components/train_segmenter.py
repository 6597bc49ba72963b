from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def train_segmenter(data: str, run_store: str, config_yaml: str, segmenter: Output[Model],
                    pseudo_masks: Input[Dataset] = None, init_segmenter: Input[Model] = None, s3_endpoint: str = ""):
    """An mmsegmentation model trained on the pseudo masks, or on the ground truth when none are given; from the
    weights of `init_segmenter` (another train-segmenter's output) when given, unless semi.warm_start is false."""
    from wsseg.runtime.pipeline_io import run_step

    run_step("train-segmenter", data, run_store, config_yaml, {"masks": pseudo_masks, "init_segmenter": init_segmenter},
             segmenter, s3_endpoint)
