"""Writes off a step's critical path: a few threads encode and store its outputs while it computes the next ones.

Compression (zlib, PNG) and store uploads release the GIL, so threads overlap them with the model or the CRF
without another process. A bounded number of writes waits, so memory stays flat however many images a step
handles; a failed write raises in the step, at the next submission or when the pool closes.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class WriterPool:
    """`submit(write, *args)` runs `write(*args)` in one of `threads` threads (inline when 0); at most
    `max_pending` writes are queued or running, a further submission first waits for the oldest. Use as a
    context manager: leaving the block waits for every write and raises the first error among them."""

    def __init__(self, threads: int, max_pending: int):
        if threads < 0 or max_pending < 1:
            raise ValueError(f"a writer pool needs threads >= 0 and max_pending >= 1, got {threads}, {max_pending}")
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="writer") if threads else None
        self.max_pending = max_pending
        self.pending: deque[Future] = deque()

    def submit(self, write: Callable, *args) -> None:
        if self.executor is None:
            write(*args)
            return
        while len(self.pending) >= self.max_pending:
            self.pending.popleft().result()
        self.pending.append(self.executor.submit(write, *args))

    def __enter__(self) -> WriterPool:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if self.executor is None:
            return
        try:
            if error_type is None:
                while self.pending:
                    self.pending.popleft().result()
        finally:
            # After an error elsewhere, writes not yet started are dropped: a resumed step redoes their images.
            self.executor.shutdown(wait=True, cancel_futures=True)
