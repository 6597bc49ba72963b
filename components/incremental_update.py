from kfp import dsl
from kfp.dsl import HTML, Dataset, Markdown, Metrics, Output

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def incremental_update(data: str, run_store: str, config_yaml: str, registry: str, inbox: str, batch: str,
                       holder: str, update: Output[Dataset], metrics: Output[Metrics], summary: Output[Markdown],
                       report: Output[HTML], s3_endpoint: str = ""):
    """The registry's next model from one inbox batch (WILSON), which `holder` (the run) claimed, scored with the
    current one on the held-out `data`, proposed to the promotion gate; the batch marked processed. The report, in
    `summary` and `report`, holds the gate's decision and the forgetting curve of the new version's lineage."""
    from wsseg.runtime.pipeline_io import run_incremental_update

    run_incremental_update(data, run_store, config_yaml, registry, inbox, batch, holder, update, metrics, summary,
                           report, s3_endpoint)
