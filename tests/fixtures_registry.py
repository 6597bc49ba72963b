"""A stand-in for train-segmenter's output: its three files, small and each run's different, so a test can tell
which model a registry version holds without training one."""
import itertools

import pytest

from wsseg.store import open_store


@pytest.fixture
def fake_model(tmp_path):
    """Call to get a new local store holding checkpoint.pth, mmseg_config.py and metrics.json."""
    counter = itertools.count(1)

    def make(checkpoint: bytes | None = None):
        run = next(counter)
        store = open_store(tmp_path / f"train-segmenter-{run}")
        store.put_bytes("checkpoint.pth", checkpoint or f"weights of run {run}".encode())
        store.put_bytes("mmseg_config.py", f"model = dict(run={run})\n".encode())
        store.put_bytes("metrics.json", b'{"val_miou": 50.0}')
        return store

    return make
