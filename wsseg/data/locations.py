"""Where a dataset's files are: a local path, or an object in a store named by its URI, read when a step needs it.

A dataset stays where it is (a folder, a bucket prefix, a manifest naming either); a step reads each image, mask
or map by key as it comes to it, so no pod copies the dataset first and a pod's disk does not grow with it.
`StoredFile` names one object; it is picklable, and each process reopens the store from the URI with the
credentials in its environment rather than sharing another process's connections.
"""
from __future__ import annotations

import os
import posixpath
import threading
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from wsseg.errors import DataError, StoreError

STORE_SCHEMES = ("s3",)


def is_store_uri(text: str | os.PathLike) -> bool:
    """Whether `text` names an object or prefix in an object store (`s3://...`) rather than a local path."""
    return urlsplit(os.fspath(text)).scheme in STORE_SCHEMES


class StoredFile:
    """One object of a store, by its URI (`s3://bucket/key`); what `Sample.image_path` holds for stored data."""

    def __init__(self, uri: str):
        parts = urlsplit(uri)
        if parts.scheme not in STORE_SCHEMES or not parts.netloc or not parts.path.strip("/"):
            raise DataError(uri, "not a store object URI (s3://bucket/key)")
        self.uri = uri
        self.bucket = parts.netloc
        self.key = parts.path.lstrip("/")

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.key).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.key).suffix

    @property
    def parent_uri(self) -> str:
        return self.uri.rpartition("/")[0]

    def read_bytes(self) -> bytes:
        from wsseg.store import StoreNotFound

        try:
            return bucket_store(self.bucket).get_bytes(self.key)
        except StoreNotFound:
            raise DataError(self.uri, "file not found") from None
        except StoreError as error:
            raise DataError(self.uri, f"cannot read file: {error}") from None

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"StoredFile({self.uri!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, StoredFile) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)


Location = Path | StoredFile


def location(text: str, base: Path | str) -> Location:
    """A manifest entry as a location: a store URI or absolute path as written, a relative path against `base` (a
    local folder, or the URI of a store prefix)."""
    if is_store_uri(text):
        return StoredFile(text)
    if text.startswith("file://"):
        return Path(unquote(urlsplit(text).path))
    if isinstance(base, str) and is_store_uri(base):
        relative = posixpath.normpath(text)
        if relative.startswith(("../", "/")) or relative == "..":
            raise DataError(text, f"a path outside the manifest's prefix {base}; write its s3:// URI instead")
        return StoredFile(f"{base.rstrip('/')}/{relative}")
    return Path(base) / text


def read_location(where: Location) -> bytes:
    """The bytes of a local file or a stored object; `DataError` naming it when it cannot be read."""
    if isinstance(where, StoredFile):
        return where.read_bytes()
    try:
        return Path(where).read_bytes()
    except FileNotFoundError:
        raise DataError(where, "file not found") from None
    except OSError as error:
        raise DataError(where, f"cannot read file: {error.strerror}") from None


_stores: dict[tuple[int, str], object] = {}
_stores_lock = threading.Lock()


def bucket_store(bucket: str):
    """The store of a whole bucket, opened once per process (a forked worker opens its own)."""
    from wsseg.store import open_store

    key = (os.getpid(), bucket)
    with _stores_lock:
        if key not in _stores:
            _stores[key] = open_store(f"s3://{bucket}")
        return _stores[key]
