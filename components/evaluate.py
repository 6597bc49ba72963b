from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def evaluate(data: str, run_store: str, config_yaml: str, segmenter: Input[Model], evaluation: Output[Dataset],
             metrics: Output[Metrics], report: Output[HTML], summary: Output[Markdown],
             cams: Input[Dataset] = None, pseudo_masks: Input[Dataset] = None,
             instance_labels: Input[Dataset] = None, instances: Input[Model] = None, s3_endpoint: str = ""):
    """mIoU of the CAMs, the pseudo masks and the segmenter, with the per-class report and overlays; given the
    instance steps' outputs, the instance mAP of their labels and model beside connected components."""
    from wsseg.runtime.pipeline_io import publish_evaluation, run_step

    inputs = {"cams": cams, "pseudo_masks": pseudo_masks, "segmenter": segmenter, "instance_labels": instance_labels,
              "instances": instances}
    run_step("evaluate", data, run_store, config_yaml, inputs, evaluation, s3_endpoint)
    publish_evaluation(evaluation, metrics, report, summary)
