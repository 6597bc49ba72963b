"""Behaviour every ArtifactStore backend shares, checked on a local directory and on a real S3 server."""
import os

import pytest
from minio.helpers import MIN_PART_SIZE

from wsseg.errors import StoreError
from wsseg.store import InvalidStoreKey, StoreConflict, StoreNotFound, open_store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(tmp_path / "artifacts")
    uri = request.getfixturevalue("s3_env")
    # The smallest part S3 allows, so an 11 MiB artifact goes up as a three-part upload.
    return open_store(uri, retries=1, backoff_s=0.05, part_size=MIN_PART_SIZE)


class Boom(Exception):
    pass


def test_bytes_round_trip(store):
    store.put_bytes("metrics.json", b'{"miou": 0.5}')
    assert store.get_bytes("metrics.json") == b'{"miou": 0.5}'


def test_empty_artifact_round_trips(store):
    store.put_bytes("empty", b"")
    assert store.get_bytes("empty") == b""
    assert store.exists("empty")


def test_put_overwrites(store):
    store.put_bytes("a", b"first")
    store.put_bytes("a", b"second")
    assert store.get_bytes("a") == b"second"


def test_file_round_trip(store, tmp_path):
    source = tmp_path / "checkpoint.pth"
    source.write_bytes(os.urandom(100_000))
    store.put_file("train/checkpoint.pth", source)
    target = tmp_path / "downloads" / "checkpoint.pth"
    target.parent.mkdir()
    store.get_file("train/checkpoint.pth", target)
    assert target.read_bytes() == source.read_bytes()


def test_streaming_write_then_streaming_read(store):
    chunks = [os.urandom(64 * 1024) for _ in range(8)]
    with store.open_write("cams/2007_000032.npz") as file:
        for chunk in chunks:
            file.write(chunk)
    with store.open_read("cams/2007_000032.npz") as file:
        received = list(iter(lambda: file.read(50_000), b""))
    assert b"".join(received) == b"".join(chunks)


def test_large_artifact_goes_up_whole(store, tmp_path):
    payload = os.urandom(11 * 1024 * 1024)
    source = tmp_path / "big.bin"
    source.write_bytes(payload)
    store.put_file("big.bin", source)
    with store.open_write("big-streamed.bin") as file:
        file.write(payload)
    assert store.get_bytes("big.bin") == payload
    assert store.get_bytes("big-streamed.bin") == payload


def test_list_returns_nested_keys_sorted(store):
    for key in ["cams/b.npz", "cams/a.npz", "masks/x/y.png", "summary.json"]:
        store.put_bytes(key, b"1")
    assert store.list() == ["cams/a.npz", "cams/b.npz", "masks/x/y.png", "summary.json"]
    assert store.list("masks/") == ["masks/x/y.png"]
    assert store.list("masks/x") == ["masks/x/y.png"]


def test_list_prefix_matches_like_s3(store):
    for key in ["cams/2007_1.npz", "cams/2008_1.npz", "cams_old/1.npz"]:
        store.put_bytes(key, b"1")
    assert store.list("cams/2007_") == ["cams/2007_1.npz"]
    assert store.list("cams/") == ["cams/2007_1.npz", "cams/2008_1.npz"]
    assert store.list("cams") == ["cams/2007_1.npz", "cams/2008_1.npz", "cams_old/1.npz"]
    assert store.list("nothing/") == []


def test_exists_and_delete(store):
    assert not store.exists("a.png")
    store.put_bytes("a.png", b"png")
    assert store.exists("a.png")
    store.delete("a.png")
    assert not store.exists("a.png")
    store.delete("a.png")


def test_a_folder_is_not_an_artifact(store):
    store.put_bytes("cams/a.npz", b"1")
    assert not store.exists("cams")


def test_child_store_is_scoped_under_its_prefix(store):
    cams = store.child("mine-cams")
    cams.put_bytes("x.npz", b"cam")
    assert store.get_bytes("mine-cams/x.npz") == b"cam"
    assert cams.list() == ["x.npz"]
    assert cams.uri == store.uri + "/mine-cams"
    assert cams.child("deeper/").uri == store.uri + "/mine-cams/deeper"


def test_uri_reopens_the_same_store(store):
    store.put_bytes("k", b"v")
    reopened = open_store(store.uri)
    assert reopened.uri == store.uri
    assert reopened.get_bytes("k") == b"v"


def test_failed_streaming_write_leaves_nothing(store):
    with pytest.raises(Boom), store.open_write("refine/a.png") as file:
        file.write(b"half a mask")
        raise Boom
    assert not store.exists("refine/a.png")
    assert store.list() == []


def test_failed_overwrite_keeps_the_old_artifact(store):
    store.put_bytes("last.pth", b"epoch 3")
    with pytest.raises(Boom), store.open_write("last.pth") as file:
        file.write(b"epoch 4, half")
        raise Boom
    assert store.get_bytes("last.pth") == b"epoch 3"
    assert store.list() == ["last.pth"]


def test_missing_key_is_named(store, tmp_path):
    with pytest.raises(StoreNotFound, match="no-such.npz"):
        store.get_bytes("no-such.npz")
    with pytest.raises(StoreNotFound, match="no-such.npz"):
        store.get_file("no-such.npz", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_create_if_absent_writes_once_and_refuses_the_second(store):
    store.put_bytes("v0001/claim.json", b"first", if_absent=True)
    with pytest.raises(StoreConflict, match="v0001/claim.json"):
        store.put_bytes("v0001/claim.json", b"second", if_absent=True)
    assert store.get_bytes("v0001/claim.json") == b"first"
    assert store.list() == ["v0001/claim.json"]


def test_a_versioned_replace_succeeds_once_per_version_read(store):
    store.put_bytes("current.json", b"pointer 1")
    data, version = store.get_versioned("current.json")
    assert data == b"pointer 1"
    store.put_bytes("current.json", b"pointer 2", if_version=version)
    with pytest.raises(StoreConflict, match="current.json"):
        store.put_bytes("current.json", b"pointer 2 from a stale read", if_version=version)
    data, fresh = store.get_versioned("current.json")
    assert data == b"pointer 2" and fresh != version
    store.put_bytes("current.json", b"pointer 3", if_version=fresh)
    assert store.get_bytes("current.json") == b"pointer 3"
    assert store.list() == ["current.json"]


def test_a_versioned_replace_of_a_deleted_artifact_is_a_conflict(store):
    store.put_bytes("lease.json", b"holder a")
    _, version = store.get_versioned("lease.json")
    store.delete("lease.json")
    with pytest.raises(StoreConflict):
        store.put_bytes("lease.json", b"holder b", if_version=version)
    assert not store.exists("lease.json")


def test_a_versioned_read_of_a_missing_key_is_not_found(store):
    with pytest.raises(StoreNotFound, match="current.json"):
        store.get_versioned("current.json")


def test_both_conditions_at_once_are_refused(store):
    with pytest.raises(StoreError, match="exclude each other"):
        store.put_bytes("k", b"v", if_absent=True, if_version="1")


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../outside", "a/../../b", "a//b", "./a", "a\\b",
                                 ".wsseg-lock-current.json"])
def test_unsafe_keys_are_rejected(store, key):
    with pytest.raises(InvalidStoreKey):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidStoreKey):
        store.child(key or "..")


def test_repr_names_the_store(store):
    assert store.uri in repr(store)
