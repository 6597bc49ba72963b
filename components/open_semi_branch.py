from typing import NamedTuple

from kfp import dsl

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI. The output type is written inline: a lightweight
# component carries only its function's source to the pod.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def open_semi_branch(run_store: str, branch: str, config_yaml: str,
                     s3_endpoint: str = "") -> NamedTuple("SemiBranch", [("run_store", str), ("config_yaml", str)]):
    """The branch's prefix of the run's store and the run's config with the branch's segmenter mode (baseline and
    continued: standard, classmix: classmix)."""
    from collections import namedtuple

    from wsseg.runtime.pipeline_io import use_endpoint
    from wsseg.semi.labelled import open_branch_run

    use_endpoint(s3_endpoint)
    return namedtuple("SemiBranch", ["run_store", "config_yaml"])(*open_branch_run(run_store, branch, config_yaml))
