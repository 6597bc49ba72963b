"""Reaching an S3 server: endpoint and credentials from the environment, a bounded-retry client, and
translation of the client's failures into `StoreError`s a user can act on.

Only plain S3 calls go through here, so the same code serves MinIO, SeaweedFS (KFP 2.17's store) and AWS.
Credentials go straight into the client and are never kept on, or printed by, any wsseg object.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import MIN_PART_SIZE

from wsseg.errors import StoreError
from wsseg.store.errors import StoreAuthError, StoreBucketNotFound, StoreConflict, StoreNotFound, StoreUnreachable

AWS_DEFAULT_ENDPOINT = "https://s3.amazonaws.com"
CREDENTIAL_VARIABLES = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, if used)"
MISSING_OBJECT_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}
AUTH_FAILURE_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
}
RETRIED_STATUSES = (500, 502, 503, 504)
# 412 when a condition fails; AWS answers 409 to a conditional write that races another on the same key.
CONDITION_REFUSED_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}


@dataclass(frozen=True)
class S3Options:
    """Knobs of the S3 backend; the defaults suit a pipeline step, tests shrink the retry budget."""

    retries: int = 3
    backoff_s: float = 0.2
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0
    # Objects larger than one part go up as a multipart upload; S3 forbids parts under 5 MiB.
    part_size: int = 64 * 1024 * 1024
    create_bucket: bool = False
    spool_dir: str | None = None

    def __post_init__(self):
        if self.part_size < MIN_PART_SIZE:
            raise StoreError(f"S3 part_size must be at least {MIN_PART_SIZE} bytes, got {self.part_size}")


@dataclass(frozen=True)
class S3Endpoint:
    host: str
    secure: bool

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}"

    @classmethod
    def from_env(cls) -> S3Endpoint:
        """AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (AWS itself if neither); WSSEG_S3_SECURE=0/1 forces TLS."""
        url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or AWS_DEFAULT_ENDPOINT
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.username or parts.password:
            raise StoreError("AWS_ENDPOINT_URL must not hold credentials; set " + CREDENTIAL_VARIABLES)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise StoreError(f"AWS_ENDPOINT_URL={url!r} is not of the form http(s)://host[:port]")
        return cls(parts.netloc, _secure_override(parts.scheme == "https"))


def _secure_override(default: bool) -> bool:
    value = os.environ.get("WSSEG_S3_SECURE", "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise StoreError(f"WSSEG_S3_SECURE={value!r} should be 0 or 1")


KEPT_CONNECTIONS = 32


def connect(endpoint: S3Endpoint, options: S3Options) -> Minio:
    """A minio client for `endpoint` with credentials from the environment and a bounded retry budget."""
    access_key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not access_key or not secret_key:
        raise StoreAuthError(f"no credentials for {endpoint.url}: set {CREDENTIAL_VARIABLES}")
    # One connection kept per thread that reads ahead (read_ahead, the annotation readers): urllib3's default of one
    # closed the others after each request, a new TCP (and TLS) connection per GET when a step streams its images.
    http = urllib3.PoolManager(
        maxsize=KEPT_CONNECTIONS,
        timeout=urllib3.Timeout(connect=options.connect_timeout_s, read=options.read_timeout_s),
        retries=urllib3.Retry(
            total=options.retries, backoff_factor=options.backoff_s, status_forcelist=RETRIED_STATUSES
        ),
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    return Minio(
        endpoint.host,
        access_key=access_key,
        secret_key=secret_key,
        session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        secure=endpoint.secure,
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
        http_client=http,
    )


@contextmanager
def s3_errors(endpoint: S3Endpoint, bucket: str, where: str) -> Iterator[None]:
    """Turn the minio client's and urllib3's failures into `StoreError`s naming `where` (an s3:// URI)."""
    try:
        yield
    except S3Error as exc:
        raise _s3_error_to_store_error(exc, endpoint, bucket, where) from exc
    except (ServerError, InvalidResponseError) as exc:
        raise StoreError(
            f"{endpoint.url} gave an answer that is not S3 for {where} ({exc}); "
            "check that AWS_ENDPOINT_URL points at the S3 API"
        ) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise StoreUnreachable(
            f"cannot reach the S3 endpoint {endpoint.url} for {where} ({_reason(exc)}); "
            "check AWS_ENDPOINT_URL and that the server is running"
        ) from exc


def _s3_error_to_store_error(exc: S3Error, endpoint: S3Endpoint, bucket: str, where: str) -> StoreError:
    if exc.code == "NoSuchBucket":
        return missing_bucket_error(endpoint, bucket)
    if exc.code in MISSING_OBJECT_CODES:
        return StoreNotFound(f"no artifact at {where}")
    if exc.code in CONDITION_REFUSED_CODES:
        return StoreConflict(f"{endpoint.url} refused the conditional write of {where} ({exc.code}): another "
                             "writer created or changed it first")
    if exc.code in AUTH_FAILURE_CODES:
        return StoreAuthError(
            f"{endpoint.url} refused access to {where} ({exc.code}); check {CREDENTIAL_VARIABLES} "
            f"and that those credentials may use bucket {bucket!r}"
        )
    return StoreError(f"S3 request for {where} failed: {exc.code}: {exc.message}")


def missing_bucket_error(endpoint: S3Endpoint, bucket: str) -> StoreBucketNotFound:
    return StoreBucketNotFound(
        f"bucket {bucket!r} does not exist at {endpoint.url}; create it (e.g. `mc mb <alias>/{bucket}` or "
        f"`aws s3 mb s3://{bucket} --endpoint-url {endpoint.url}`) or open the store with create_bucket=True"
    )


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    """The root cause of a urllib3 failure, e.g. 'Connection refused', without object reprs."""
    cause = getattr(exc, "reason", None) or exc
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        return str(cause).split(": ", 1)[-1]
    return str(cause)
