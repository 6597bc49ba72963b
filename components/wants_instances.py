from kfp import dsl

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def wants_instances(config_yaml: str) -> bool:
    """Whether the run's config asks for instances (`instances.enabled`), which the pipeline's condition reads."""
    from wsseg.runtime.pipeline_io import instances_enabled

    return instances_enabled(config_yaml)
