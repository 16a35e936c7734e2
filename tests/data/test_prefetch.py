"""The background-thread prefetcher keeps order, re-raises producer errors and stops cleanly."""

import threading

import pytest

from pipeline.data.prefetch import prefetch_in_thread


def test_yields_every_batch_in_order():
    assert list(prefetch_in_thread(iter(range(50)), depth=3)) == list(range(50))


def test_producer_error_is_raised_in_the_consumer():
    def batches():
        yield 1
        raise OSError("chip cache truncated")

    consumer = prefetch_in_thread(batches())
    assert next(consumer) == 1
    with pytest.raises(OSError, match="chip cache truncated"):
        next(consumer)


def test_stopping_early_releases_the_thread():
    before = threading.active_count()
    consumer = prefetch_in_thread(iter(range(1000)), depth=2)
    assert next(consumer) == 0
    consumer.close()  # what a `break` or an exception in the training loop does
    assert threading.active_count() == before
