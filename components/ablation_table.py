
from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def ablation_table(run_store: str, methods: list[str], evaluations: Input[list[Dataset]],
                   upper_bound: Input[Dataset], table: Output[Markdown], report: Output[HTML],
                   metrics: Output[Metrics], s3_endpoint: str = ""):
    """One row per method: CAM, pseudo-mask and segmenter mIoU, the upper bound, and minutes.

    The figures are read from the run store; `evaluations` and `upper_bound` are inputs so that the table waits
    for every method's evaluation and the upper bound's."""
    from pathlib import Path

    from wsseg.runtime.pipeline_io import use_endpoint
    from wsseg.store import open_store
    from wsseg.wsss.ablation import TABLE, write_ablation_table

    use_endpoint(s3_endpoint)
    figures = write_ablation_table(run_store, methods)
    for row in figures["methods"]:
        for name in ("cam_miou", "pseudo_mask_miou", "segmenter_miou"):
            if row[name] is not None:
                metrics.log_metric(f"{row['method']}_{name}", row[name])
    for summary in figures["across_seeds"]:
        for name in ("cam_miou", "pseudo_mask_miou", "segmenter_miou"):
            if summary[name] is not None:
                metrics.log_metric(f"{summary['method']}_mean_{name}", summary[name]["mean"])
    written = open_store(run_store).child(TABLE)
    for artifact, key in ((table, "table.md"), (report, "report.html")):
        Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
        Path(artifact.path).write_bytes(written.get_bytes(key))
