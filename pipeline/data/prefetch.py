"""Overlap batch preparation with training in a background thread.

With ``num_workers=0`` the DataLoader augments in the training process, so every step waits for its
batch. A worker *process* fixes that on big machines, but on 2 cores it takes a core from the training
threads and pays to pickle every batch. A thread costs neither: OpenCV and NumPy release the GIL in
their kernels, so the next batch is augmented while PyTorch's kernels run. Batches are deterministic
regardless (views depend on (seed, epoch, chip) only); order is preserved.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch_in_thread(batches: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``batches`` in order while a thread prepares up to ``depth`` ahead; re-raise its errors here."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
        except BaseException as error:  # handed to the consumer, which raises it in the training thread
            put(_Failure(error))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
