"""Conditional writes on S3: `If-None-Match: *` creates an object only if there is none, `If-Match: <ETag>`
replaces it only if it is unchanged; the server refuses either with 412 PreconditionFailed (AWS S3, MinIO, moto).

minio's `put_object` turns a header it does not know into user metadata (`x-amz-meta-if-none-match`), which the
server stores and never checks, so the condition goes through the client's own single-PUT request instead,
`Minio._put_object`, whose headers reach the wire as given. A server that ignores the conditions would let
concurrent writers overwrite one another silently, so each store probes its server once before its first
conditional write, and refuses to go on where a condition was ignored. No probe can see a server that checks a
condition and then writes as two steps, so that two racing writes both pass (moto's threaded server); AWS S3 and
MinIO check and write as one.
"""
from __future__ import annotations

import secrets
import threading

from minio import Minio
from minio.error import S3Error

from wsseg.store.errors import ConditionalWritesIgnored
from wsseg.store.keys import RESERVED_PREFIX, join_keys
from wsseg.store.s3_connection import CONDITION_REFUSED_CODES, S3Endpoint, s3_errors

CREATE_ONLY = {"If-None-Match": "*"}
# No object's ETag: an MD5 in hex never holds anything but hex digits.
NO_SUCH_VERSION = '"not-an-etag"'


def replace_only(version: str) -> dict:
    return {"If-Match": version}


def put_object_if(client: Minio, bucket: str, name: str, data: bytes, condition: dict) -> None:
    """PUT `data` as `name` in one request that carries `condition` as real HTTP headers."""
    client._put_object(bucket, name, data, headers={"Content-Type": "application/octet-stream", **condition})


class ConditionalWriteProbe:
    """Whether the server behind a store honours conditional writes, found out once and shared by the store's
    children (the registry's and the inbox's folders)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._honoured = False

    def ensure_honoured(self, client: Minio, endpoint: S3Endpoint, bucket: str, prefix: str) -> None:
        """Raise `ConditionalWritesIgnored`, naming the endpoint, unless the server refuses both a second create
        of one object and a replace of it at a version it never had."""
        with self._lock:
            if self._honoured:
                return
            name = join_keys(prefix, f"{RESERVED_PREFIX}probe-{secrets.token_hex(8)}")
            with s3_errors(endpoint, bucket, f"s3://{bucket}/{name}"):
                ignored = _ignored_condition(client, bucket, name)
            if ignored:
                raise ConditionalWritesIgnored(
                    f"the S3 server at {endpoint.url} ignores `{ignored}`: it let the probe object "
                    f"s3://{bucket}/{name} be overwritten against that condition, so concurrent writers of a model "
                    "registry or an inbox there would silently lose one another's changes. Use a server that "
                    "honours conditional writes (AWS S3, MinIO), or keep the registry and the inbox on a volume")
            self._honoured = True


def _ignored_condition(client: Minio, bucket: str, name: str) -> str | None:
    """The first condition the server let a write past, or None when it refused both."""
    put_object_if(client, bucket, name, b"probe", CREATE_ONLY)
    try:
        for condition in (CREATE_ONLY, replace_only(NO_SUCH_VERSION)):
            try:
                put_object_if(client, bucket, name, b"overwritten", condition)
            except S3Error as exc:
                if exc.code in CONDITION_REFUSED_CODES:
                    continue
                raise
            return ": ".join(*condition.items())
        return None
    finally:
        client.remove_object(bucket, name)
