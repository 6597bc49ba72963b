"""The one container image every wsseg component runs in.

Components use it as `base_image`, the Makefile's `IMAGE` reads it, and the manifests name it; the
`WSSEG_IMAGE` environment variable overrides it everywhere at once (set it before `make compile` so the
compiled pipelines point at the image you pushed).
"""
from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

IMAGE_REPOSITORY = "ghcr.io/wsseg/wsseg"


def _package_version() -> str:
    try:
        return metadata.version("wsseg")
    except metadata.PackageNotFoundError:
        # A source checkout that was never pip-installed (e.g. `make image` before `make venv`).
        pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
        return re.search(r'^version\s*=\s*"([^"]+)"', pyproject, re.MULTILINE).group(1)


DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{_package_version()}"
WSSEG_IMAGE = os.environ.get("WSSEG_IMAGE", DEFAULT_IMAGE)
