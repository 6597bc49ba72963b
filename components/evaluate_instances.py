from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def evaluate_instances(data: str, run_store: str, config_yaml: str, semantic: Input[Dataset], cams: Input[Dataset],
                       pseudo_masks: Input[Dataset], instance_labels: Input[Dataset], instances: Input[Model],
                       evaluation: Output[Dataset], metrics: Output[Metrics], report: Output[HTML],
                       summary: Output[Markdown], s3_endpoint: str = ""):
    """The merged evaluation (`semantic`) with the instance mAP of the instance labels and model added, beside
    connected components."""
    from wsseg.runtime.pipeline_io import publish_evaluation, run_shard_task

    inputs = {"cams": cams, "pseudo_masks": pseudo_masks, "instance_labels": instance_labels, "instances": instances}
    run_shard_task("evaluate-instances", data, run_store, config_yaml, inputs, evaluation, s3_endpoint=s3_endpoint)
    publish_evaluation(evaluation, metrics, report, summary)
