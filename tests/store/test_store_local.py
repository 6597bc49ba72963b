"""Local-directory backend details: how URIs map to folders and what stays on disk."""
import os
import stat

import pytest

from wsseg.errors import StoreError
from wsseg.store import LocalStore, open_store


def test_plain_path_and_file_uri_open_the_same_folder(tmp_path):
    by_path = open_store(tmp_path / "a b")
    by_path.put_bytes("k", b"v")
    by_uri = open_store(by_path.uri)
    assert by_path.uri.startswith("file:///")
    assert isinstance(by_uri, LocalStore) and by_uri.root == tmp_path / "a b"
    assert by_uri.get_bytes("k") == b"v"


def test_relative_path_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_store("runs/1").root == tmp_path / "runs" / "1"


def test_keys_are_files_in_subfolders(tmp_path):
    open_store(tmp_path).put_bytes("cams/2007_000032.npz", b"cam")
    assert (tmp_path / "cams" / "2007_000032.npz").read_bytes() == b"cam"


def test_failed_write_leaves_no_temp_file_on_disk(tmp_path):
    store = open_store(tmp_path)
    with pytest.raises(RuntimeError), store.open_write("refine/a.png") as file:
        file.write(b"half")
        raise RuntimeError("mask computation failed")
    assert os.listdir(tmp_path / "refine") == []


def test_unfinished_write_is_invisible_to_readers(tmp_path):
    store = open_store(tmp_path)
    with store.open_write("a.png") as file:
        file.write(b"half")
        assert store.list() == []
        assert not store.exists("a.png")
    assert store.list() == ["a.png"]


def test_artifacts_get_normal_file_permissions(tmp_path):
    store = open_store(tmp_path)
    store.put_bytes("a", b"1")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o666 & ~umask


def test_s3_options_are_refused_for_a_local_store(tmp_path):
    with pytest.raises(StoreError, match="s3://"):
        open_store(tmp_path, create_bucket=True)


def test_unknown_scheme_is_refused():
    with pytest.raises(StoreError, match="gs://bucket"):
        open_store("gs://bucket/x")


def test_remote_file_uri_is_refused():
    with pytest.raises(StoreError, match="host"):
        open_store("file://otherhost/data")
