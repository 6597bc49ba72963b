"""Store keys: `/`-separated relative paths that mean the same thing on a local disk and in a bucket."""
from wsseg.store.errors import InvalidStoreKey

# Local writes land under this name first; keys may not use it, so a half-written file is never a key.
TEMP_PREFIX = ".wsseg-tmp-"


def check_key(key: str) -> str:
    """Return `key` unchanged if it is a safe relative path, else raise `InvalidStoreKey` saying why."""
    if not isinstance(key, str) or not key:
        raise InvalidStoreKey(f"store key must be a non-empty string, got {key!r}")
    if key.startswith("/") or "\\" in key:
        raise InvalidStoreKey(f"store key {key!r} must be a relative path with '/' separators")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidStoreKey(f"store key {key!r} has an empty, '.' or '..' segment")
        if part.startswith(TEMP_PREFIX):
            raise InvalidStoreKey(f"store key {key!r} uses the reserved prefix {TEMP_PREFIX!r}")
    return key


def check_prefix(prefix: str) -> str:
    """Return a listing prefix unchanged if it is empty or a key, optionally ending in one '/'."""
    if prefix:
        check_key(prefix.removesuffix("/"))
    return prefix


def join_keys(parent: str, child: str) -> str:
    """Join a store's own prefix (possibly empty) and a key below it."""
    return f"{parent}/{child}" if parent else child
