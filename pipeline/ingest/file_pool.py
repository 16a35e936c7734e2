"""Reading a folder's files with the main process and helper processes; results in file order.

``ingest.workers = N`` means N decoding processes: the main process and N − 1 spawned helpers. The main process
reads files from the front of the list while the helpers take chunks from the back, and the results are handed
on in file order, so the cache never depends on N. Why not a plain pool with an idle main process:

- **Start-up**: a spawned helper spends ~1 s importing numpy, rasterio, pydicom and OpenCV before its first
  file. The main process, already warm, reads meanwhile, and chunks go to a helper only once it has started:
  the start-up is hidden instead of added, and a folder read faster than a helper starts (1,200 uncompressed
  CT slices: ~1 s) never waits for one. On 2 cores, 2 workers are 2 busy processes, not 2 readers and an idle
  collector.
- **Large results**: a GeoTIFF scene gives tens of MB of float32 chips (cut at full resolution, twice the bytes
  of the uint16 read). Through the pool's pipe that is pickled, copied through a 64 KiB buffer with a context
  switch per chunk and unpickled: measured 0.2–0.7 s per 54 MB scene on 2 cores, serialised in the main
  process. A helper writes such a result to a temporary ``.npy`` instead (one copy into the page cache,
  ~0.05 s) and the main process memory-maps it (~0.01 s). Small results (a DICOM slice's one chip) still go
  through the pipe: a file per slice would cost more than the copy it saves.
- **Read-ahead**: the main process asks the kernel to start reading the next files (up to
  :data:`READ_AHEAD_BYTES`) while it decodes the current one, so an archive that is not in the page cache is
  read from disk during the decoding instead of between files (50,000 cold CT slices, 25 GB: 94 → 64–67 s).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from pipeline.data.shards import write_stacked
from pipeline.ingest.sources import FileChips, FileTask
from pipeline.ingest.spill import SpilledArrays

# Results with more chip bytes than this go through a file; 8 MiB is ~130 four-band 64² chips.
SPILL_BYTES = 8 * 2**20
READ_AHEAD_BYTES = 64 * 2**20  # of the files after the one being decoded, asked of the kernel ahead of time


def read_in_order(function: Callable[[FileTask], FileChips], tasks: Sequence[FileTask],
                  workers: int) -> Iterator[FileChips]:
    """``map(function, tasks)`` over ``workers`` processes (the main one included), yielded in task order."""
    helpers = min(workers, len(tasks)) - 1
    if helpers <= 0:
        yield from map(function, _read_ahead(tasks))
        return
    with tempfile.TemporaryDirectory(prefix="ingest-") as folder:
        pool = ProcessPoolExecutor(max_workers=helpers, mp_context=get_context("spawn"))
        finished = False
        try:
            yield from _two_ended(function, tasks, pool, helpers, Path(folder))
            finished = True
        finally:
            # Done: every chunk has come back, so a helper still importing need not be waited for (it exits
            # when its import ends). An error, or a caller that stopped early: wait for running chunks, so
            # that none writes into the temporary folder as it is removed.
            pool.shutdown(wait=not finished, cancel_futures=True)


def _two_ended(function, tasks: Sequence[FileTask], pool: ProcessPoolExecutor, helpers: int,
               folder: Path) -> Iterator[FileChips]:
    """The main process takes tasks from the front, helpers chunks from the back, until the two ends meet.

    Chunks are cut only once a helper has started (imported the readers): until then the main process may
    read the whole folder alone, and a small folder never waits for a helper's start-up. Chunks shrink as the
    ends approach (an eighth of what is left per process), so that no process waits long for the last chunk
    of another, while a large folder still goes to the helpers in few messages.
    """
    front, back = 0, len(tasks)
    started = [pool.submit(_started, function) for _ in range(helpers)]
    chunks: list[tuple[int, Future]] = []  # (first task index, future of the chunk's results), cut from the back

    def feed() -> None:  # keep every started helper busy with one chunk queued behind it
        nonlocal back
        ready = sum(future.done() for future in started)
        while sum(not future.done() for _, future in chunks) < 2 * ready and back > front:
            start = max(front, back - max(1, (back - front) // (8 * (helpers + 1))))
            chunks.append((start, pool.submit(_read_chunk, function, tasks[start:back], start, folder)))
            back = start

    feed()
    ahead = _read_ahead(tasks)
    while front < back:
        result = function(next(ahead))
        front += 1
        yield result
        feed()
    for _, future in sorted(chunks, key=lambda item: item[0]):
        yield from map(restore_spilled, future.result())


def _read_ahead(tasks: Sequence[FileTask]) -> Iterator[FileTask]:
    """``tasks`` in order, while a thread asks the kernel (``POSIX_FADV_WILLNEED``) to read each one's file and
    the files after it up to :data:`READ_AHEAD_BYTES`. A thread, because the request blocks once the disk's
    queue is full (5.5 s of 64 on 50,000 cold CT slices when the decoding thread made it)."""
    paths = [getattr(task, "path", None) for task in tasks]
    ahead = ReadAhead(paths, READ_AHEAD_BYTES)
    try:
        for index, task in enumerate(tasks):
            ahead.reached(index)
            yield task
    finally:
        ahead.close()


class ReadAhead:
    """A thread that asks for ``paths[k]`` once the reader has reached a file at most ``budget`` bytes before it."""

    def __init__(self, paths: Sequence[Path | None], budget: int) -> None:
        self.paths, self.budget = list(paths), budget
        self.ends = np.cumsum([_size(path) for path in self.paths])
        self.current, self.stopped = 0, False
        self.condition = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="ingest-read-ahead", daemon=True)
        self.thread.start()

    def reached(self, index: int) -> None:
        with self.condition:
            self.current = index
            self.condition.notify()

    def close(self) -> None:
        with self.condition:
            self.stopped = True
            self.condition.notify()
        self.thread.join()

    def _run(self) -> None:
        for index, path in enumerate(self.paths):
            with self.condition:
                self.condition.wait_for(lambda: self.stopped or index <= self.current
                                        or self.ends[index] - self.ends[self.current] <= self.budget)
                if self.stopped:
                    return
            if path is not None:
                will_need(path)


def _size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:  # the reader says why, in the file's own outcome
        return 0


def will_need(path: Path) -> None:
    """Ask the kernel to read ``path`` into the page cache in the background (Linux; a no-op elsewhere)."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(descriptor)


def _started(function: Callable[[FileTask], FileChips]) -> bool:
    """Runs in a helper once it has unpickled ``function``, i.e. imported the reader's modules."""
    return callable(function)


def _read_chunk(function, tasks: Sequence[FileTask], start: int, folder: Path) -> list[FileChips]:
    return [spill_large(function(task), folder, str(start + offset)) for offset, task in enumerate(tasks)]


def spill_large(result: FileChips, folder: Path, name: str) -> FileChips:
    """In a helper: move a large result's images and valid masks into ``folder`` (``<name>.images.npy``,
    ``<name>.valid.npy``); the returned result names the files and carries no chips."""
    if isinstance(result.images, SpilledArrays) or sum(image.nbytes for image in result.images) <= SPILL_BYTES:
        return result  # already in files (the reader spilled a large scene), or small
    if len({image.shape for image in result.images}) != 1:  # never from one file's reader; kept in the pipe
        return result
    write_stacked(folder / f"{name}.images.npy", result.images)
    write_stacked(folder / f"{name}.valid.npy", result.valid)
    return replace(result, images=[], valid=[], spilled=str(folder / name))


def restore_spilled(result: FileChips) -> FileChips:
    """In the main process: the chips of a spilled result as views of its memory-mapped files.

    Copy-on-write mappings: callers may modify a chip without touching the file, and the files may be deleted
    once mapped (the mapping keeps the data).
    """
    if not result.spilled:
        return result
    images = np.load(f"{result.spilled}.images.npy", mmap_mode="c").view(np.ndarray)  # plain arrays, mapped
    valid = np.load(f"{result.spilled}.valid.npy", mmap_mode="c").view(np.ndarray)
    return replace(result, images=list(images), valid=list(valid), spilled="")
