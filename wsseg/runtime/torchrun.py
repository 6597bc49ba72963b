"""Where this process stands among those torchrun (or the Kubeflow training operator's pods) started.

torchrun sets `RANK` and `WORLD_SIZE` for each process; a step run any other way is rank 0 of 1. Rank 0 alone
writes a distributed training's checkpoint and keeps the step's time (`wsseg.runtime.step_commands`).
"""
from __future__ import annotations

import os


def world_position() -> tuple[int, int]:
    """(rank, world size) from the environment torchrun sets; (0, 1) outside it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
