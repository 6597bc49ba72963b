"""The writer pool: writes run behind the caller, a bounded number at a time, and their errors reach it."""
import threading
import time

import pytest

from wsseg.runtime.writer_pool import WriterPool


def test_every_write_is_done_when_the_block_ends():
    written = []
    with WriterPool(threads=3, max_pending=2) as pool:
        for item in range(20):
            pool.submit(written.append, item)
    assert sorted(written) == list(range(20))


def test_no_more_than_max_pending_writes_wait_or_run_at_once():
    running, most = 0, 0
    lock = threading.Lock()

    def slow_write():
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1

    with WriterPool(threads=4, max_pending=2) as pool:
        for _ in range(12):
            pool.submit(slow_write)
    assert most == 2


def test_a_failed_write_raises_in_the_caller():
    def failing_write(item):
        if item == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), WriterPool(threads=2, max_pending=4) as pool:
        for item in range(6):
            pool.submit(failing_write, item)


def test_without_threads_writes_run_in_line():
    callers = []
    with WriterPool(threads=0, max_pending=1) as pool:
        pool.submit(lambda: callers.append(threading.current_thread()))
    assert callers == [threading.main_thread()]
