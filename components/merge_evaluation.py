from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def merge_evaluation(data: str, run_store: str, config_yaml: str, parts: Input[list[Dataset]],
                     evaluation: Output[Dataset], metrics: Output[Metrics], report: Output[HTML],
                     summary: Output[Markdown], pseudo_masks: Input[Dataset] = None, s3_endpoint: str = ""):
    """mIoU of the CAMs, the pseudo masks and the segmenter from the shards' summed counts (`parts`), with the
    per-class report and overlays."""
    from wsseg.runtime.pipeline_io import publish_evaluation, run_shard_task

    run_shard_task("merge-evaluate", data, run_store, config_yaml, {"pseudo_masks": pseudo_masks}, evaluation,
                   shards=len(parts), s3_endpoint=s3_endpoint)
    publish_evaluation(evaluation, metrics, report, summary)
