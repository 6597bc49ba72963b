"""Store keys: `/`-separated relative paths that mean the same thing on a local disk and in a bucket."""
from wsseg.store.errors import InvalidStoreKey

# Names the store keeps for itself; keys may not use them, so its own files are never artifacts: local writes land
# under a temporary name first, a local compare-and-swap locks a sidecar file, an S3 store probes its server.
RESERVED_PREFIX = ".wsseg-"
TEMP_PREFIX = f"{RESERVED_PREFIX}tmp-"
LOCK_PREFIX = f"{RESERVED_PREFIX}lock-"


def check_key(key: str) -> str:
    """Return `key` unchanged if it is a safe relative path, else raise `InvalidStoreKey` saying why."""
    if not isinstance(key, str) or not key:
        raise InvalidStoreKey(f"store key must be a non-empty string, got {key!r}")
    if key.startswith("/") or "\\" in key:
        raise InvalidStoreKey(f"store key {key!r} must be a relative path with '/' separators")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidStoreKey(f"store key {key!r} has an empty, '.' or '..' segment")
        if part.startswith(RESERVED_PREFIX):
            raise InvalidStoreKey(f"store key {key!r} uses the reserved prefix {RESERVED_PREFIX!r}")
    return key


def check_prefix(prefix: str) -> str:
    """Return a listing prefix unchanged if it is empty or a key, optionally ending in one '/'."""
    if prefix:
        check_key(prefix.removesuffix("/"))
    return prefix


def join_keys(parent: str, child: str) -> str:
    """Join a store's own prefix (possibly empty) and a key below it."""
    return f"{parent}/{child}" if parent else child
