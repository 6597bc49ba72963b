"""A dataset named by a store URI, as the local folder or manifest the readers (`load_samples`) take.

Steps run alone and pipeline components alike take `--data` as a local path or an s3:// prefix; the prefix is
fetched once into a local cache (`WSSEG_DATA_CACHE`, /tmp/wsseg-data by default).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from wsseg.store import open_store

log = logging.getLogger(__name__)


def local_dataset(data: str, cache_root: str | None = None) -> str:
    """A local folder or manifest holding the dataset: the path itself, or a cached copy of an s3:// prefix.

    Files already in the cache are not fetched again, so a retried pod starts quickly.
    """
    if not data.startswith("s3://"):
        return data
    source = open_store(data)
    cache = Path(cache_root or os.environ.get("WSSEG_DATA_CACHE", "/tmp/wsseg-data"))
    target = cache / data.removeprefix("s3://").rstrip("/")
    fetched = 0
    for key in source.list():
        destination = target / key
        if not destination.exists():
            destination.parent.mkdir(parents=True, exist_ok=True)
            source.get_file(key, destination)
            fetched += 1
    log.info("dataset %s: %d files fetched into %s", data, fetched, target)
    return str(target)
