"""Dataset fixtures (written by the data work)."""
from pathlib import Path

import pytest

from wsseg.classes import ClassList
from wsseg.data import make_synthetic_voc


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory) -> Path:
    """Root of a 12 train + 6 val synthetic VOC 2012-layout dataset of 64 px images."""
    return make_synthetic_voc(tmp_path_factory.mktemp("tiny_voc"), train=12, val=6, seed=0, size=64)


@pytest.fixture(scope="session")
def classes() -> ClassList:
    """The VOC class list the synthetic sets use."""
    return ClassList()
