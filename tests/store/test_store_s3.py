"""S3 backend details against real servers: multipart uploads, integrity checks, and the faults a user
meets (server down, wrong credentials, missing bucket), each with an error that says what to fix."""
import hashlib
import io
import os
import time
import traceback

import pytest
from minio.helpers import MIN_PART_SIZE

from tests.fixtures_s3 import TEST_SECRET, free_port, minio_client, set_s3_env, unique_bucket_name
from wsseg.errors import StoreError
from wsseg.store import (
    ConditionalWritesIgnored,
    StoreAuthError,
    StoreBucketNotFound,
    StoreConflict,
    StoreIntegrityError,
    StoreNotFound,
    StoreUnreachable,
    open_store,
)
from wsseg.store.s3_connection import S3Endpoint

FAST_FAILURE = {"retries": 2, "backoff_s": 0.05, "connect_timeout_s": 1.0}


def bucket_of(uri: str) -> str:
    return uri.removeprefix("s3://").split("/")[0]


def full_error_text(exc: BaseException) -> str:
    """Everything a traceback would print, chained causes included."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


def test_large_file_goes_up_multipart_and_reads_back_whole(s3_env, s3_server, tmp_path):
    store = open_store(s3_env, part_size=MIN_PART_SIZE)
    payload = os.urandom(11 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(payload)
    store.put_file("big.bin", tmp_path / "big.bin")
    stat = minio_client(s3_server).stat_object(bucket_of(s3_env), "run/big.bin")
    assert stat.etag.endswith("-3")
    assert stat.size == len(payload)
    store.get_file("big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == payload


def test_small_object_etag_is_its_md5(s3_env, s3_server):
    open_store(s3_env).put_bytes("a.json", b"{}")
    stat = minio_client(s3_server).stat_object(bucket_of(s3_env), "run/a.json")
    assert stat.etag == hashlib.md5(b"{}").hexdigest()


def test_corrupted_download_fails_the_md5_check(s3_env, damaging_proxy, monkeypatch, tmp_path):
    open_store(s3_env).put_bytes("mask.png", os.urandom(1000))
    monkeypatch.setenv("AWS_ENDPOINT_URL", damaging_proxy("flip").url)
    through_proxy = open_store(s3_env, **FAST_FAILURE)
    with pytest.raises(StoreIntegrityError, match="MD5"):
        through_proxy.get_bytes("mask.png")
    with pytest.raises(StoreIntegrityError):
        through_proxy.get_file("mask.png", tmp_path / "mask.png")
    assert not (tmp_path / "mask.png").exists()


def test_truncated_download_fails_the_size_check(s3_env, damaging_proxy, monkeypatch):
    open_store(s3_env, part_size=MIN_PART_SIZE).put_bytes("big.bin", os.urandom(MIN_PART_SIZE + 10))
    monkeypatch.setenv("AWS_ENDPOINT_URL", damaging_proxy("truncate").url)
    with pytest.raises(StoreIntegrityError, match="big.bin"):
        open_store(s3_env, **FAST_FAILURE).get_bytes("big.bin")


def test_unreachable_endpoint_fails_within_seconds(s3_env, monkeypatch):
    closed_endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_endpoint)
    started = time.monotonic()
    with pytest.raises(StoreUnreachable, match=closed_endpoint) as caught:
        open_store(s3_env, **FAST_FAILURE)
    assert time.monotonic() - started < 5
    assert "AWS_ENDPOINT_URL" in str(caught.value)


def test_missing_bucket_is_named_with_the_fix(s3_server, monkeypatch):
    set_s3_env(monkeypatch, s3_server)
    bucket = unique_bucket_name()
    with pytest.raises(StoreBucketNotFound, match=bucket) as caught:
        open_store(f"s3://{bucket}/run")
    assert "create_bucket=True" in str(caught.value)
    assert isinstance(caught.value, StoreNotFound)


def test_create_bucket_option_creates_a_missing_bucket(s3_server, monkeypatch):
    set_s3_env(monkeypatch, s3_server)
    bucket = unique_bucket_name()
    open_store(f"s3://{bucket}/run", create_bucket=True).put_bytes("k", b"v")
    assert minio_client(s3_server).bucket_exists(bucket)


def test_invalid_bucket_name_is_refused(s3_server, monkeypatch):
    set_s3_env(monkeypatch, s3_server)
    with pytest.raises(StoreError, match="Bad_Bucket"):
        open_store("s3://Bad_Bucket/run")


def test_right_credentials_work_on_an_authenticating_server(s3_auth_server, monkeypatch):
    url, bucket, access_key, secret_key = s3_auth_server
    set_s3_env(monkeypatch, url, access_key, secret_key)
    store = open_store(f"s3://{bucket}/run")
    store.put_bytes("k", b"v")
    assert store.get_bytes("k") == b"v"


def test_wrong_secret_is_an_auth_error_naming_the_variables(s3_auth_server, monkeypatch):
    url, bucket, access_key, _ = s3_auth_server
    set_s3_env(monkeypatch, url, access_key, TEST_SECRET)
    with pytest.raises(StoreAuthError, match="AWS_SECRET_ACCESS_KEY") as caught:
        open_store(f"s3://{bucket}/run", **FAST_FAILURE)
    assert TEST_SECRET not in full_error_text(caught.value)


def test_unknown_access_key_is_an_auth_error(s3_auth_server, monkeypatch):
    url, bucket, _, _ = s3_auth_server
    set_s3_env(monkeypatch, url, "AKIANOSUCHKEY", TEST_SECRET)
    with pytest.raises(StoreAuthError, match="AWS_ACCESS_KEY_ID"):
        open_store(f"s3://{bucket}/run", **FAST_FAILURE)


def test_missing_credentials_are_named(s3_server, monkeypatch):
    set_s3_env(monkeypatch, s3_server)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreAuthError, match="AWS_SECRET_ACCESS_KEY"):
        open_store("s3://any-bucket/run")


def test_secret_never_appears_in_errors_reprs_or_uris(s3_env, s3_server, monkeypatch):
    store = open_store(s3_env)
    failures = [lambda: store.get_bytes("missing.npz"), lambda: open_store(f"s3://{unique_bucket_name()}")]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    failures.append(lambda: open_store(s3_env, **FAST_FAILURE))
    for fail in failures:
        with pytest.raises(StoreError) as caught:
            fail()
        assert TEST_SECRET not in full_error_text(caught.value)
    for text in (repr(store), store.uri, str(vars(store)), repr(store.child("a"))):
        assert TEST_SECRET not in text


@pytest.mark.parametrize(
    ("url", "secure_override", "host", "secure"),
    [
        ("http://127.0.0.1:9000", None, "127.0.0.1:9000", False),
        ("https://minio.example:9000/", None, "minio.example:9000", True),
        ("seaweedfs.kubeflow:8333", None, "seaweedfs.kubeflow:8333", True),
        ("seaweedfs.kubeflow:8333", "0", "seaweedfs.kubeflow:8333", False),
        ("http://minio:9000", "1", "minio:9000", True),
    ],
)
def test_endpoint_comes_from_the_environment(monkeypatch, url, secure_override, host, secure):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    if secure_override is None:
        monkeypatch.delenv("WSSEG_S3_SECURE", raising=False)
    else:
        monkeypatch.setenv("WSSEG_S3_SECURE", secure_override)
    assert S3Endpoint.from_env() == S3Endpoint(host, secure)


def test_credentials_in_the_endpoint_url_are_refused_without_echoing_them(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://user:{TEST_SECRET}@minio:9000")
    with pytest.raises(StoreError, match="AWS_SECRET_ACCESS_KEY") as caught:
        S3Endpoint.from_env()
    assert TEST_SECRET not in full_error_text(caught.value)


def test_parts_below_the_s3_minimum_are_refused(s3_env):
    with pytest.raises(StoreError, match="part_size"):
        open_store(s3_env, part_size=1024)


def test_a_second_create_is_refused_by_the_server_itself(s3_env, s3_server, recording_proxy, monkeypatch):
    proxy = recording_proxy(drop_conditions=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    store = open_store(s3_env)
    store.put_bytes("v0001/claim.json", b"first", if_absent=True)
    with pytest.raises(StoreConflict, match="PreconditionFailed"):
        store.put_bytes("v0001/claim.json", b"second", if_absent=True)
    # The condition went out as a header, and moto kept the first object: no metadata stands in for it.
    assert len(proxy.puts_with("If-None-Match")) >= 2
    stat = minio_client(s3_server).stat_object(bucket_of(s3_env), "run/v0001/claim.json")
    assert stat.size == len(b"first") and not any("if-none-match" in name.lower() for name in stat.metadata)


def test_the_server_is_probed_once_per_store_and_its_children(s3_env, recording_proxy, monkeypatch):
    proxy = recording_proxy(drop_conditions=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    store = open_store(s3_env)
    store.child("registry").put_bytes("a", b"1", if_absent=True)
    store.child("inbox").put_bytes("b", b"2", if_absent=True)
    _, version = store.get_versioned("registry/a")
    store.put_bytes("registry/a", b"3", if_version=version)
    probes = [path for path in proxy.puts_with("If-None-Match") if "/.wsseg-probe-" in path]
    assert len(probes) == 2  # the probe object's create, then the second create the server must refuse
    assert len(proxy.puts_with("If-Match")) == 2  # the probe's replace of a version it never had, then ours
    assert store.list() == ["inbox/b", "registry/a"] and store.get_bytes("registry/a") == b"3"


def test_minio_put_object_metadata_does_not_carry_the_condition(s3_env, s3_server):
    """Why the store sends conditions through the client's request layer: put_object keeps them as metadata."""
    client, bucket = minio_client(s3_server), bucket_of(s3_env)
    for data in (b"first", b"second"):
        client.put_object(bucket, "run/k", io.BytesIO(data), len(data), metadata={"If-None-Match": "*"})
    stat = client.stat_object(bucket, "run/k")
    assert stat.size == len(b"second") and stat.metadata["x-amz-meta-if-none-match"] == "*"


def test_a_server_that_ignores_conditional_writes_is_named_and_refused(s3_env, recording_proxy, monkeypatch):
    proxy = recording_proxy(drop_conditions=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    store = open_store(s3_env)
    with pytest.raises(ConditionalWritesIgnored, match="If-None-Match") as caught:
        store.put_bytes("current.json", b"pointer", if_absent=True)
    assert proxy.url in str(caught.value)
    store.put_bytes("current.json", b"pointer")
    _, version = store.get_versioned("current.json")
    with pytest.raises(ConditionalWritesIgnored, match=proxy.url):
        store.put_bytes("current.json", b"pointer 2", if_version=version)
    # Refused before writing: what was stored stays, and the probe leaves nothing behind.
    assert store.get_bytes("current.json") == b"pointer" and store.list() == ["current.json"]
