"""mmengine's file I/O over wsseg's stores: images, masks and checkpoints read and written by URI, never staged.

Registered as the `wsseg` backend and as the one for `s3://` paths, which mmengine otherwise hands to Petrel
(SenseTime's client, not installed): mmcv's `LoadImageFromFile` and mmseg's `LoadAnnotations` read a training image
or mask from wherever the dataset or the pseudo masks are as the step reaches it, and the checkpoint hook
(`STORE_BACKEND_ARGS`) writes checkpoints straight into the step's store, atomically on local disk too, so a
training pod's disk holds neither the dataset nor its checkpoints.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from mmengine.fileio import BaseStorageBackend, FileClient, register_backend

from wsseg.data.locations import StoredFile, is_store_uri, read_location

STORE_BACKEND = "wsseg"
STORE_BACKEND_ARGS = {"backend": STORE_BACKEND}


class StoreFiles(BaseStorageBackend):
    """Local paths, `file://` URIs (local stores) and `s3://` URIs (stored objects)."""

    def get(self, filepath) -> bytes:
        return read_location(_location(filepath))

    def get_text(self, filepath, encoding="utf-8") -> str:
        return self.get(filepath).decode(encoding)

    def put(self, obj: bytes, filepath) -> None:
        folder, _, name = str(filepath).rpartition("/")
        _folder_store(folder).put_bytes(name, obj)

    def exists(self, filepath) -> bool:
        folder, _, name = str(filepath).rpartition("/")
        return _folder_store(folder).exists(name)

    def isfile(self, filepath) -> bool:
        return self.exists(filepath)

    def isdir(self, filepath) -> bool:
        return False  # a store has keys, not folders; mmengine asks only of checkpoints saved as folders

    def remove(self, filepath) -> None:
        folder, _, name = str(filepath).rpartition("/")
        _folder_store(folder).delete(name)

    def join_path(self, filepath, *filepaths) -> str:
        return "/".join([str(filepath).rstrip("/"), *filepaths])


def _location(filepath):
    text = str(filepath)
    if is_store_uri(text):
        return StoredFile(text)
    if text.startswith("file://"):
        return Path(unquote(urlsplit(text).path))
    return Path(text)


def _folder_store(folder: str):
    from wsseg.store import open_store

    return open_store(folder)


def checkpoint_folder(store_uri: str) -> str:
    """The folder mmengine saves a store's checkpoints in: its local path, or its `s3://` URI."""
    return unquote(urlsplit(store_uri).path) if store_uri.startswith("file://") else store_uri


register_backend(STORE_BACKEND, StoreFiles, force=True, prefixes="s3")
# mmengine's deprecated FileClient, which its checkpoint saving still consults, keeps a registry of its own; its
# register_backend (0.10.7) drops the instances of an overridden prefix's backend but forgets to map the prefix to
# the new one, so the mapping is set here as register_backend means to.
FileClient.register_backend(STORE_BACKEND, StoreFiles, force=True, prefixes="s3")
FileClient._prefix_to_backends["s3"] = StoreFiles
