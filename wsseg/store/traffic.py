"""What a process moved through its S3 stores: requests and bytes each way.

Each pipeline task is a process of its own (a pod, or a kfp.local subprocess), so the difference across a step's
run is that task's traffic; the step's clock records it in `step.json` (`wsseg.runtime.step_clock`), which is how
a shard's share of the dataset's bytes is measured.
"""
from __future__ import annotations

import threading
from collections import Counter

_counts: Counter = Counter()
_lock = threading.Lock()


def count(**amounts: int) -> None:
    """Add to the process's counters, e.g. `count(gets=1)` or `count(bytes_read=4096)`."""
    with _lock:
        _counts.update(amounts)


def traffic() -> dict[str, int]:
    """The counters so far: gets, bytes_read, puts, bytes_written, heads, lists."""
    with _lock:
        return {name: _counts[name] for name in ("gets", "bytes_read", "puts", "bytes_written", "heads", "lists")}


def since(before: dict[str, int]) -> dict[str, int]:
    """The traffic since the snapshot `before` (a `traffic()` result)."""
    now = traffic()
    return {name: now[name] - before.get(name, 0) for name in now}
