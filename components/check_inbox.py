from kfp import dsl

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def check_inbox(inbox: str, registry: str, config_yaml: str, holder: str, s3_endpoint: str = "") -> str:
    """The oldest inbox batch not processed yet that no other run holds, claimed for `holder` (the run), or "" when
    none is free; a batch whose classes cannot grow the registry's current version fails here, before the GPU step
    and its retries."""
    from wsseg.runtime.pipeline_io import claim_oldest_batch

    return claim_oldest_batch(inbox, registry, config_yaml, holder, s3_endpoint)
