"""Reading ahead: results come in the items' order, errors come back in place of their item, and no more than
`depth` items are read before the caller takes them."""
import threading
import time

import pytest

from wsseg.runtime.read_ahead import read_ahead


@pytest.mark.parametrize("threads", [0, 3])
def test_results_come_in_the_order_of_the_items(threads):
    def slow_square(item):
        time.sleep(0.01 * (item % 3))  # later items often finish first
        return item * item

    assert list(read_ahead(slow_square, range(12), threads)) == [(item, item * item) for item in range(12)]


@pytest.mark.parametrize("threads", [0, 2])
def test_an_error_comes_back_in_place_of_its_item_and_the_rest_are_read(threads):
    def read(item):
        if item == 2:
            raise ValueError("broken item")
        return item

    outcomes = dict(read_ahead(read, range(5), threads))
    assert isinstance(outcomes.pop(2), ValueError)
    assert outcomes == {0: 0, 1: 1, 3: 3, 4: 4}


def test_no_more_than_depth_items_are_read_before_the_caller_takes_them():
    read = []
    lock = threading.Lock()

    def record(item):
        with lock:
            read.append(item)
        return item

    stream = read_ahead(record, range(100), threads=2, depth=4)
    next(stream)
    time.sleep(0.2)
    assert len(read) <= 4 + 1
    stream.close()  # the caller stops: items not yet read are dropped
    time.sleep(0.1)
    assert len(read) <= 4 + 1
