"""The ways an artifact store can fail, each a `StoreError` so the CLI prints it without a traceback."""
from wsseg.errors import StoreError


class InvalidStoreKey(StoreError):
    """A key is empty, absolute, or climbs out of the store with `..`."""


class StoreNotFound(StoreError):
    """The key holds no artifact."""


class StoreBucketNotFound(StoreNotFound):
    """The S3 bucket named in the store URI does not exist."""


class StoreUnreachable(StoreError):
    """The storage server did not answer, even after retries."""


class StoreAuthError(StoreError):
    """The storage server refused the credentials."""


class StoreIntegrityError(StoreError):
    """What was read does not match what the server says it stored."""


class StoreConflict(StoreError):
    """A conditional write was refused: the key exists already (`if_absent`), or no longer holds the version
    that was read (`if_version`). Another writer got there first; read again and decide again."""


class ConditionalWritesIgnored(StoreError):
    """The storage server accepted a write its condition forbade, so compare-and-swap cannot be trusted there."""
