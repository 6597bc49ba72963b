"""Reads ahead of a step's critical path: a few threads decode the next items while the step scores this one.

Decoding PNGs and `.npz` files and store downloads release the GIL, so threads overlap them with the model or
the scoring without another process. At most `depth` items are read and waiting, so memory stays flat.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def read_ahead(read: Callable[[Item], Result], items: Iterable[Item], threads: int,
               depth: int | None = None) -> Iterator[tuple[Item, Result | Exception]]:
    """(item, read(item)) in the order of `items`, read by `threads` threads (in line when 0) up to `depth`
    items ahead (default 2 per thread). An exception `read` raises is yielded in place of its result, so the
    caller decides per item whether it skips or stops; items not yet read are dropped when the caller stops."""
    if threads <= 0:
        for item in items:
            yield item, _outcome(read, item)
        return
    depth = depth or 2 * threads
    with ThreadPoolExecutor(threads, thread_name_prefix="reader") as executor:
        pending: deque[tuple[Item, Future]] = deque()
        try:
            for item in items:
                pending.append((item, executor.submit(_outcome, read, item)))
                if len(pending) >= depth:
                    item, future = pending.popleft()
                    yield item, future.result()
            while pending:
                item, future = pending.popleft()
                yield item, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def _outcome(read: Callable, item):
    try:
        return read(item)
    except Exception as error:  # handed to the caller, who knows which errors are fatal
        return error
