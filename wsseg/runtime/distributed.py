"""Training past one device: one process per GPU (or CPU slot) under `torchrun`, for either training step.

    torchrun --nproc_per_node=8 -m wsseg.runtime.distributed train-segmenter --data D --masks M --out O --preset gpu
    torchrun --nproc_per_node=8 -m wsseg.runtime.distributed train-classifier --data D --out O --preset gpu

takes the step's name, then the flags of `wsseg train-segmenter` or `wsseg train-classifier` (which, run under
torchrun themselves, do the same). Each process reads its place from the environment torchrun (or the Kubeflow
training operator's pods) set: `WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR/PORT`; each trains on its share
of every epoch's images (a `DistributedSampler`), and rank 0 alone writes the checkpoint.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist

from wsseg.errors import WssegError
from wsseg.runtime.torchrun import world_position

TRAINING_STEPS = ("train-classifier", "train-segmenter")


def join_process_group(cuda: bool) -> None:
    """Join the process group: gloo on CPU, NCCL on this rank's GPU (`LOCAL_RANK`).

    mmengine 0.10.7's `pytorch` launcher calls `torch.cuda.set_device` even without CUDA, so on CPU the gloo
    group is initialised here, before its Runner is built, and the Runner then skips its own init; on GPU the
    segmenter's Runner initialises the group itself, and the classifier joins it here.
    """
    if dist.is_initialized():
        return
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")


def main(argv: list[str] | None = None) -> int:
    from wsseg.runtime import step_commands

    parser = argparse.ArgumentParser(prog="python -m wsseg.runtime.distributed", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    # The pipeline step that launched the job times it.
    step_commands.register(subparsers, timed=False, commands=TRAINING_STEPS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except WssegError as error:
        print(f"wsseg: error (rank {world_position()[0]}): {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
