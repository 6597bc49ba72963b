"""The random generators' states, kept with a training's resume checkpoint so that a rerun after a kill draws what
the uninterrupted training would have drawn (data order, augmentations, dropout, mixing masks)."""
from __future__ import annotations

import random

import numpy as np
import torch


def random_states() -> dict:
    """Python's, NumPy's and torch's (CPU and CUDA) generator states, as types `torch.load(weights_only=True)`
    reads back."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return dict(python=random.getstate(),
                numpy=(kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
                torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def set_random_states(states: dict) -> None:
    """Puts back what `random_states` saved; the CUDA states only on as many devices as saved them."""
    random.setstate(states["python"])
    kind, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
