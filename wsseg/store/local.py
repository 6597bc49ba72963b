"""The local-directory backend: the embedded default, also any mounted volume."""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from wsseg.store.atomic import atomic_write
from wsseg.store.base import ArtifactStore
from wsseg.store.errors import StoreNotFound
from wsseg.store.keys import TEMP_PREFIX, check_key, check_prefix


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
                if key.startswith(prefix) and not name.startswith(TEMP_PREFIX):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            pass

    def child(self, prefix: str) -> LocalStore:
        return LocalStore(self.root / check_key(prefix.removesuffix("/")))

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)
