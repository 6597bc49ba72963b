from typing import NamedTuple

from kfp import dsl

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI. The output type is written inline: a lightweight
# component carries only its function's source to the pod.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def open_method_run(store_uri: str, run_name: str, job_id: str, method: str, config_yaml: str,
                    s3_endpoint: str = "") -> NamedTuple("MethodRun", [("run_store", str), ("config_yaml", str)]):
    """The method's prefix of the run's store (named `run_name`, else the KFP job id) and the run's config with
    the method's settings merged in."""
    from collections import namedtuple

    from wsseg.runtime.pipeline_io import use_endpoint
    from wsseg.store import open_store
    from wsseg.wsss.ablation import open_method_run as open_method_store

    use_endpoint(s3_endpoint)
    run_store = open_store(store_uri).child(run_name or job_id).uri
    return namedtuple("MethodRun", ["run_store", "config_yaml"])(*open_method_store(run_store, method, config_yaml))
