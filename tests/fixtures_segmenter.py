"""Segmenter fixtures: one torch thread for the modules that train or run segmenters, and a trained segmenter for
the tests that put one to use (predict, export): cpu-tiny DeepLabV3+, a few iterations on the tiny set's ground
truth, trained once per session."""
from contextlib import contextmanager

import pytest
import torch

from wsseg.classes import ClassList
from wsseg.config import default_config
from wsseg.store import open_store


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_voc, tmp_path_factory):
    """The store train-segmenter wrote (checkpoint.pth, mmseg_config.py)."""
    from wsseg.steps.train_segmenter import train_segmenter

    config = default_config("cpu-tiny")
    config["segmenter"].update(iterations=4, validate=False)
    store = open_store(tmp_path_factory.mktemp("tiny_segmenter"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_segmenter(tiny_voc, None, store, config, ClassList())
    finally:
        torch.set_num_threads(threads)
    return store


class Killed(Exception):
    """The process dying part way through a training."""


@pytest.fixture
def dies_in_iteration(monkeypatch):
    """`with dies_in_iteration(n): train_segmenter(...)`: the training dies as its iteration n starts, after the
    checkpoints of the iterations before it reached the store, as a killed pod's would."""
    from mmengine.runner import IterBasedTrainLoop

    run_iter = IterBasedTrainLoop.run_iter

    @contextmanager
    def dying(iteration: int):
        def run_or_die(loop, data_batch):
            if loop.iter == iteration - 1:
                raise Killed
            run_iter(loop, data_batch)

        with monkeypatch.context() as patch:
            patch.setattr(IterBasedTrainLoop, "run_iter", run_or_die)
            with pytest.raises(Killed):
                yield
    return dying
