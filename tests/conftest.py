"""Shared fixtures live in their own modules; this file only gathers them."""
from fixtures_data import *  # noqa: F401,F403
from fixtures_kubernetes import *  # noqa: F401,F403
from fixtures_registry import *  # noqa: F401,F403
from fixtures_s3 import *  # noqa: F401,F403
from fixtures_segmenter import *  # noqa: F401,F403
