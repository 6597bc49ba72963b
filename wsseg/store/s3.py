"""The S3 backend: artifacts as objects under `s3://bucket/prefix`, through the minio client."""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import S3Error
from minio.helpers import check_bucket_name

from wsseg.errors import StoreError
from wsseg.store import traffic
from wsseg.store.base import ArtifactStore
from wsseg.store.errors import StoreConflict, StoreIntegrityError, StoreNotFound, StoreUnreachable
from wsseg.store.keys import RESERVED_PREFIX, check_key, check_prefix, join_keys
from wsseg.store.s3_conditions import CREATE_ONLY, ConditionalWriteProbe, put_object_if, replace_only
from wsseg.store.s3_connection import (
    MISSING_OBJECT_CODES,
    S3Endpoint,
    S3Options,
    connect,
    missing_bucket_error,
    s3_errors,
)

# A single-part upload's ETag is the MD5 of its bytes; a multipart one ends in `-<part count>` and is not,
# nor is the ETag of an object encrypted with KMS or a customer key (AWS S3 docs, "Checking object integrity").
MD5_ETAG = re.compile(r"[0-9a-f]{32}")
ETAG_HIDING_ENCRYPTION = ("aws:kms", "aws:kms:dsse")


class S3Store(ArtifactStore):
    """Artifacts as objects in `bucket` under `prefix`; build one with `S3Store.open(uri, **options)`."""

    def __init__(self, client: Minio, endpoint: S3Endpoint, bucket: str, prefix: str, options: S3Options,
                 probe: ConditionalWriteProbe):
        self._client = client
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix
        self.options = options
        self._probe = probe

    @classmethod
    def open(cls, uri: str, **options) -> S3Store:
        """Connect to the endpoint named by the environment and check that the bucket exists.

        Options are `S3Options` fields; `create_bucket=True` creates a missing bucket instead of failing.
        """
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc:
            raise StoreError(f"{uri!r} is not an s3://bucket[/prefix] URI")
        bucket, prefix = parts.netloc, parts.path.strip("/")
        try:
            check_bucket_name(bucket)
        except ValueError:
            raise StoreError(f"{uri!r}: {bucket!r} is not a valid S3 bucket name") from None
        endpoint = S3Endpoint.from_env()
        settings = S3Options(**options)
        store = cls(connect(endpoint, settings), endpoint, bucket, check_prefix(prefix), settings,
                    ConditionalWriteProbe())
        store._ensure_bucket()
        return store

    @property
    def uri(self) -> str:
        return f"s3://{join_keys(self.bucket, self.prefix)}"

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r} at {self.endpoint.url})"

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        # Spooled because S3 cannot append: the upload starts only once the content is final, and a failure
        # inside the `with` block never reaches the server. In memory up to one part (a checkpoint, a map), so a
        # step's disk does not hold what it writes; larger artifacts, which go up in parts anyway, spill to disk.
        name = self._object_name(key)
        with tempfile.SpooledTemporaryFile(max_size=self.options.part_size, dir=self.options.spool_dir) as spool:
            yield spool
            size = spool.tell()
            spool.seek(0)
            self._upload(key, name, spool, size)

    def _put(self, key: str, data: bytes) -> None:
        self._upload(key, self._object_name(key), io.BytesIO(data), len(data))

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        name = self._object_name(key)
        with self._errors(key):
            response = self._client.get_object(self.bucket, name)
        traffic.count(gets=1)
        etag = response.headers.get("ETag", "")
        with io.BufferedReader(VerifiedDownload(response, self._where(key))) as body:
            return body.read(), etag

    def _create(self, key: str, data: bytes) -> None:
        self._put_if(key, data, CREATE_ONLY)

    def _replace(self, key: str, data: bytes, version: str) -> None:
        try:
            self._put_if(key, data, replace_only(version))
        except StoreNotFound:
            raise StoreConflict(f"{self._where(key)} is gone; it was read at version {version}") from None

    def _put_if(self, key: str, data: bytes, condition: dict) -> None:
        self._probe.ensure_honoured(self._client, self.endpoint, self.bucket, self.prefix)
        name = self._object_name(key)
        with self._errors(key):
            put_object_if(self._client, self.bucket, name, data, condition)
        traffic.count(puts=1, bytes_written=len(data))

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        name = self._object_name(key)
        with self._errors(key):
            self._client.fput_object(self.bucket, name, str(path), part_size=self.options.part_size)
        traffic.count(puts=1, bytes_written=os.path.getsize(path))

    def open_read(self, key: str) -> BinaryIO:
        name = self._object_name(key)
        with self._errors(key):
            response = self._client.get_object(self.bucket, name)
        traffic.count(gets=1)
        return io.BufferedReader(VerifiedDownload(response, self._where(key)))

    def exists(self, key: str) -> bool:
        name = self._object_name(key)
        traffic.count(heads=1)
        with self._errors(key):
            try:
                self._client.stat_object(self.bucket, name)
            except S3Error as exc:
                if exc.code in MISSING_OBJECT_CODES:
                    return False
                raise
        return True

    def list(self, prefix: str = "") -> list[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        with self._errors(prefix):
            objects = self._client.list_objects(self.bucket, prefix=root + check_prefix(prefix), recursive=True)
            names = [obj.object_name for obj in objects]
        # S3 answers a listing a thousand keys at a time.
        traffic.count(lists=1 + len(names) // 1000)
        # Folder markers that other tools leave (`name/`) are not artifacts, nor is a probe of conditional writes.
        return sorted(name[len(root):] for name in names
                      if not name.endswith("/") and not name.rpartition("/")[2].startswith(RESERVED_PREFIX))

    def delete(self, key: str) -> None:
        name = self._object_name(key)
        with self._errors(key):
            self._client.remove_object(self.bucket, name)

    def child(self, prefix: str) -> S3Store:
        child_prefix = join_keys(self.prefix, check_key(prefix.removesuffix("/")))
        return S3Store(self._client, self.endpoint, self.bucket, child_prefix, self.options, self._probe)

    def _upload(self, key: str, name: str, data: BinaryIO, size: int) -> None:
        # minio uploads in one PUT up to part_size and as multipart above it; both become visible
        # only when complete, and minio aborts a failed multipart upload.
        with self._errors(key):
            self._client.put_object(self.bucket, name, data, size, part_size=self.options.part_size)
        traffic.count(puts=1, bytes_written=size)

    def _ensure_bucket(self) -> None:
        with self._errors(""):
            if self._client.bucket_exists(self.bucket):
                return
            if not self.options.create_bucket:
                raise missing_bucket_error(self.endpoint, self.bucket)
            self._client.make_bucket(self.bucket)

    def _object_name(self, key: str) -> str:
        return join_keys(self.prefix, check_key(key))

    def _where(self, key: str) -> str:
        return f"{self.uri}/{key}" if key else self.uri

    def _errors(self, key: str):
        return s3_errors(self.endpoint, self.bucket, self._where(key))


class VerifiedDownload(io.RawIOBase):
    """An object's body that, once read to the end, checks its size and (single-part) MD5 against the
    response headers, so a truncated or corrupted transfer raises instead of yielding wrong bytes."""

    def __init__(self, response: urllib3.BaseHTTPResponse, where: str):
        self._response = response
        self._where = where
        length = response.headers.get("Content-Length")
        self._expected_size = int(length) if length is not None else None
        self._etag = response.headers.get("ETag", "").strip('"').lower()
        self._md5 = hashlib.md5(usedforsecurity=False) if _etag_is_md5(self._etag, response.headers) else None
        self._size = 0
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            count = self._response.readinto(buffer)
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise StoreUnreachable(f"the S3 server stopped answering while sending {self._where}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StoreIntegrityError(
                f"download of {self._where} broke off before all {self._expected_size} bytes arrived"
            ) from exc
        if count:
            self._size += count
            traffic.count(bytes_read=count)
            if self._md5 is not None:
                self._md5.update(memoryview(buffer)[:count])
        elif len(buffer) and not self._verified:
            self._verify()
        return count

    def _verify(self) -> None:
        self._verified = True
        if self._expected_size is not None and self._size != self._expected_size:
            raise StoreIntegrityError(
                f"{self._where}: received {self._size} bytes, the server reports {self._expected_size}"
            )
        if self._md5 is not None and self._md5.hexdigest() != self._etag:
            raise StoreIntegrityError(
                f"{self._where}: MD5 of the received bytes {self._md5.hexdigest()} does not match "
                f"the object's ETag {self._etag}"
            )

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


def _etag_is_md5(etag: str, headers) -> bool:
    encrypted = (
        headers.get("x-amz-server-side-encryption") in ETAG_HIDING_ENCRYPTION
        or "x-amz-server-side-encryption-customer-algorithm" in headers
    )
    return bool(MD5_ETAG.fullmatch(etag)) and not encrypted
