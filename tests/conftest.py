"""Shared fixtures live in their own modules; this file only gathers them."""
from tests.fixtures_data import *  # noqa: F401,F403
from tests.fixtures_kubernetes import *  # noqa: F401,F403
from tests.fixtures_registry import *  # noqa: F401,F403
from tests.fixtures_s3 import *  # noqa: F401,F403
from tests.fixtures_segmenter import *  # noqa: F401,F403
