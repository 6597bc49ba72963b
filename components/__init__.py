"""KFP lightweight components: each a thin typed shell around one wsseg library call.

Every component runs in the project's image (`wsseg.image.WSSEG_IMAGE`). Step outputs are pointer
artifacts naming a prefix of the run's store (see `wsseg.runtime.pipeline_io`).
"""
