"""Training the segmenter past one device: one process per GPU (or CPU slot) under `torchrun`.

    torchrun --nproc_per_node=8 -m wsseg.segmenter.distributed --data D --masks M --out O --preset gpu

takes the same flags as `wsseg train-segmenter` (which, run under torchrun itself, does the same). Each
process reads its place from the environment torchrun (or the Kubeflow training operator's pods) set:
`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR/PORT`; mmengine's Runner then trains with its `pytorch`
launcher, and rank 0 alone writes the checkpoint.
"""
from __future__ import annotations

import argparse
import sys

import torch.distributed as dist

from wsseg.errors import WssegError
from wsseg.runtime.torchrun import world_position


def join_process_group(cuda: bool) -> None:
    """Join the process group on CPU; on GPU mmengine's launcher does it.

    mmengine 0.10.7's `pytorch` launcher calls `torch.cuda.set_device` even without CUDA, so on CPU the gloo
    group is initialised here, before the Runner is built, and the Runner then skips its own init.
    """
    if not cuda and not dist.is_initialized():
        dist.init_process_group("gloo")


def main(argv: list[str] | None = None) -> int:
    from wsseg.runtime import step_commands

    parser = argparse.ArgumentParser(prog="python -m wsseg.segmenter.distributed", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    # The pipeline step that launched the job times it.
    step_commands.register(subparsers, timed=False)
    args = parser.parse_args(["train-segmenter", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except WssegError as error:
        print(f"wsseg: error (rank {world_position()[0]}): {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
