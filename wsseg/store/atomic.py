"""Atomic local file writes: readers see the old file or the whole new one, never a partial one."""
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from wsseg.errors import StoreError
from wsseg.store.keys import TEMP_PREFIX


@contextmanager
def atomic_write(path: Path, publish: Callable[[Path, Path], None] = os.replace) -> Iterator[BinaryIO]:
    """Yield a file that `publish(temp_path, path)` puts in place on a clean exit (by default replacing `path`);
    on an exception, in the block or in `publish`, `path` is left as it was."""
    temp_path = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}-{path.name}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # os.open rather than mkstemp: mkstemp's 0600 mode would survive the rename and hide artifacts
        # from other users of a shared directory.
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        publish(temp_path, path)
    finally:
        # Gone after a rename; still there after a hard link, a refusal or a failure.
        temp_path.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable, not only the file's bytes."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
