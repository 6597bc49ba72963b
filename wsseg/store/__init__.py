"""Artifact stores: `open_store(uri)` gives a local-directory or S3 `ArtifactStore`."""
from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from wsseg.errors import StoreError
from wsseg.store.base import ArtifactStore
from wsseg.store.errors import (
    ConditionalWritesIgnored,
    InvalidStoreKey,
    StoreAuthError,
    StoreBucketNotFound,
    StoreConflict,
    StoreIntegrityError,
    StoreNotFound,
    StoreUnreachable,
)
from wsseg.store.local import LocalStore

__all__ = [
    "ArtifactStore",
    "ConditionalWritesIgnored",
    "InvalidStoreKey",
    "LocalStore",
    "StoreAuthError",
    "StoreBucketNotFound",
    "StoreConflict",
    "StoreError",
    "StoreIntegrityError",
    "StoreNotFound",
    "StoreUnreachable",
    "open_store",
]


def open_store(uri: str | os.PathLike, **options) -> ArtifactStore:
    """The store at `uri`: a plain path, `file:///abs/path`, or `s3://bucket/prefix`.

    `options` go to the S3 backend (see `S3Options`, e.g. `create_bucket=True`); the local one takes none.
    """
    text = os.fspath(uri)
    scheme = urlsplit(text).scheme
    if scheme == "s3":
        from wsseg.store.s3 import S3Store  # minio is only needed when S3 is used

        return S3Store.open(text, **options)
    if options:
        raise StoreError(f"options {sorted(options)} apply only to s3:// stores, not {text!r}")
    if scheme == "file":
        return LocalStore(_file_uri_path(text))
    if len(scheme) > 1:
        raise StoreError(f"unsupported store URI {text!r}: use a path, file:///abs/path or s3://bucket/prefix")
    return LocalStore(os.path.expanduser(text))


def _file_uri_path(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise StoreError(f"file URI {uri!r} names host {parts.netloc!r}; only local paths are supported")
    return unquote(parts.path)
