from kfp import dsl

from wsseg.image import WSSEG_IMAGE


# kfp is in the image already: pods need not reach PyPI.
@dsl.component(base_image=WSSEG_IMAGE, install_kfp_package=False)
def check_inbox(inbox: str, s3_endpoint: str = "") -> str:
    """The oldest inbox batch not processed yet, or "" when none waits."""
    from wsseg.inbox import Inbox
    from wsseg.pipeline_io import use_endpoint
    from wsseg.store import open_store

    use_endpoint(s3_endpoint)
    return Inbox(open_store(inbox)).oldest_pending() or ""
