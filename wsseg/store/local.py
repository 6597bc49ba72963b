"""The local-directory backend: the embedded default, also any mounted volume.

Conditional writes: a create is a hard link of the finished temporary file, which the kernel refuses if the name
exists; a replace checks the version and renames while holding an exclusive `flock` on a sidecar lock file, so
that no other process's replace slips between the check and the rename. A version is the SHA-256 of the bytes:
unlike (inode, mtime), whose inode a later file may reuse within one coarse clock tick, it changes whenever the
bytes do, and equal bytes are the same state for a compare-and-swap.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import BinaryIO

from wsseg.store.atomic import atomic_write
from wsseg.store.base import ArtifactStore
from wsseg.store.errors import StoreConflict, StoreNotFound
from wsseg.store.keys import LOCK_PREFIX, RESERVED_PREFIX, check_key, check_prefix


class LocalStore(ArtifactStore):
    """Artifacts as files under `root`; a key's `/` separators become subdirectories."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.abspath(root))

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def open_write(self, key: str):
        return atomic_write(self._path(key))

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise StoreNotFound(f"no artifact {key!r} in {self.uri}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        # Only the prefix's directory part can be walked; its last segment filters names as in S3.
        walk_root = self.root / check_prefix(prefix).rpartition("/")[0]
        keys = []
        for directory, _, filenames in os.walk(walk_root):
            relative_dir = Path(directory).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if relative_dir == "." else f"{relative_dir}/{name}"
                if key.startswith(prefix) and not name.startswith(RESERVED_PREFIX):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            pass

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)
        return data, _content_version(data)

    def _create(self, key: str, data: bytes) -> None:
        with atomic_write(self._path(key), publish=partial(_link_if_absent, where=self._where(key))) as file:
            file.write(data)

    def _replace(self, key: str, data: bytes, version: str) -> None:
        publish = partial(self._rename_if_version, key=key, version=version)
        with atomic_write(self._path(key), publish=publish) as file:
            file.write(data)

    def _rename_if_version(self, temp_path: Path, path: Path, *, key: str, version: str) -> None:
        with _exclusive_lock(path.parent / f"{LOCK_PREFIX}{path.name}"):
            try:
                stored = _content_version(path.read_bytes())
            except FileNotFoundError:
                raise StoreConflict(f"{self._where(key)} is gone; it was read at version {version[:12]}") from None
            if stored != version:
                raise StoreConflict(f"{self._where(key)} changed since it was read (version {version[:12]}, "
                                    f"now {stored[:12]})")
            os.replace(temp_path, path)

    def child(self, prefix: str) -> LocalStore:
        return LocalStore(self.root / check_key(prefix.removesuffix("/")))

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _where(self, key: str) -> str:
        return f"{self.uri}/{key}"


def _content_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _link_if_absent(temp_path: Path, path: Path, *, where: str) -> None:
    try:
        os.link(temp_path, path)
    except FileExistsError:
        raise StoreConflict(f"{where} exists already") from None


@contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    # The lock file stays: removing it while another process waits on it would let a third lock a new file.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
