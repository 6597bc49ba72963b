"""Data-parallel segmenter training under torchrun: two CPU processes (gloo) stand in for two GPUs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from wsseg.store import open_store


def test_two_ranks_train_together_and_only_rank_0_writes_the_checkpoint(tiny_voc, tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    # `--redirects 3` gives each rank its own stdout/stderr files under `--log-dir`.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "--log-dir", str(logs), "--redirects", "3", "-m", "wsseg.runtime.distributed",
               "train-segmenter", "--data", str(tiny_voc), "--out", str(out), "--preset", "cpu-tiny"]
    # One thread per rank: two ranks on a shared 2-core box would otherwise spin against each other.
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    rank_logs = {int(path.parent.name): path.read_text() for path in logs.rglob("stdout.log")}
    assert result.returncode == 0, result.stderr[-4000:] + "".join(path.read_text()[-2000:]
                                                                  for path in logs.rglob("stderr.log"))

    # Each rank prints its own one-line summary: both trained every iteration inside a world of two.
    assert sorted(rank_logs) == [0, 1]
    for rank, text in rank_logs.items():
        summary = json.loads(text.strip().splitlines()[-1])
        assert summary["rank"] == rank and summary["world_size"] == 2 and summary["iterations"] == 4

    store = open_store(out)
    assert sorted(store.list()) == ["checkpoint.pth", "last.pth", "metrics.json", "mmseg_config.py"]
    checkpoint = torch.load(store.open_read("checkpoint.pth"), map_location="cpu", weights_only=False)
    assert checkpoint["meta"]["iter"] == 4
    # Plain weights: DDP's `module.` prefix is stripped, so the model loads without the wrapper.
    assert not any(key.startswith("module.") for key in checkpoint["state_dict"])
    assert json.loads(store.get_bytes("metrics.json"))["world_size"] == 2
