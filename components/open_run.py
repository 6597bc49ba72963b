from kfp import dsl

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def open_run(store_uri: str, run_name: str, job_id: str, config_yaml: str, s3_endpoint: str = "") -> str:
    """The run's store prefix (named `run_name`, else the KFP job id), holding a copy of the config."""
    from wsseg.runtime.pipeline_io import open_run as open_run_store

    return open_run_store(store_uri, run_name or job_id, config_yaml, s3_endpoint)
