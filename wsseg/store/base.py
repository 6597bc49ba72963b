"""`ArtifactStore`: the one interface steps use to read and write their artifacts, wherever they live."""
from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from wsseg.errors import StoreError
from wsseg.store.atomic import atomic_write

COPY_CHUNK_BYTES = 1024 * 1024


class ArtifactStore(ABC):
    """A flat namespace of `/`-separated keys holding bytes.

    Writes are atomic: an artifact appears under its key whole, or not at all. Backends implement the
    streaming primitives; the byte and file helpers here are built on them. Small artifacts can also be written
    conditionally (`put_bytes(..., if_absent=True)` or `if_version=`), which is what lets several writers share
    a registry or an inbox without losing one another's changes.
    """

    @property
    @abstractmethod
    def uri(self) -> str:
        """Where the store lives (`file://...` or `s3://bucket/prefix`); never holds credentials."""

    @abstractmethod
    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A binary file whose contents appear under `key` only when the `with` block exits cleanly."""

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A binary file streaming the artifact at `key`; raises `StoreNotFound` if there is none."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an artifact is stored under `key`."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys (relative to this store) that start with `prefix`, at any depth."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the artifact at `key`; removing a missing key is not an error."""

    @abstractmethod
    def child(self, prefix: str) -> ArtifactStore:
        """A store over the keys under `prefix/`, e.g. one step's output folder."""

    @abstractmethod
    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The artifact at `key` and its version, an opaque token that changes whenever its bytes do; raises
        `StoreNotFound` if there is none."""

    @abstractmethod
    def _create(self, key: str, data: bytes) -> None:
        """Write `data` under `key` only if no artifact is there, as one atomic step; else `StoreConflict`."""

    @abstractmethod
    def _replace(self, key: str, data: bytes, version: str) -> None:
        """Write `data` under `key` only if it still holds `version`, as one atomic step; else `StoreConflict`."""

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None) -> None:
        """Store `data` under `key`. With `if_absent`, only if nothing is stored there yet; with `if_version`,
        only if the artifact is still the one `get_versioned` returned with that version. A write whose
        condition fails changes nothing and raises `StoreConflict`."""
        if if_absent and if_version is not None:
            raise StoreError(f"put_bytes({key!r}): if_absent and if_version exclude each other")
        if if_absent:
            self._create(key, data)
        elif if_version is not None:
            self._replace(key, data, if_version)
        else:
            self._put(key, data)

    def _put(self, key: str, data: bytes) -> None:
        with self.open_write(key) as file:
            file.write(data)

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as file:
            return file.read()

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        with open(path, "rb") as source, self.open_write(key) as target:
            shutil.copyfileobj(source, target, COPY_CHUNK_BYTES)

    def get_file(self, key: str, path: str | os.PathLike) -> None:
        """Copy the artifact to a local `path`, which is replaced atomically."""
        with self.open_read(key) as source, atomic_write(Path(path)) as target:
            shutil.copyfileobj(source, target, COPY_CHUNK_BYTES)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"
