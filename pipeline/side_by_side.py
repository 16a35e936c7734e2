"""Independent runs side by side in forked processes, results in input order.

Why: a fine-tune of a small backbone on 64 px chips does not keep two CPU cores busy (a step at batch 16 runs
only ~1.5× faster on 2 threads than on 1), so a stage's seeds × label fractions finish sooner as one-thread runs
in parallel than one after another on every core. Each run seeds itself, so its result depends on its own
thread count only, never on how many runs share the machine or in which order they finish.

Processes are forked, not spawned: the children inherit the loaded chips, fitted probes and imported modules
without pickling them, and only each run's (small) result travels back. torch-free; the caller passes the
per-worker setup (e.g. ``torch.set_num_threads(1)``). Never fork after CUDA is initialised: callers on a GPU
run one at a time (``workers = 1`` runs in this process, no fork).
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
from collections.abc import Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger(__name__)

POLL_S = 1.0  # how often a parent waiting for results checks that its workers are alive


class RunFailed(RuntimeError):
    """A forked run raised an exception that could not travel back as itself, or its process died."""


def map_side_by_side(run: Callable[[Item], Result], items: Sequence[Item], workers: int,
                     worker_setup: Callable[[], None] | None = None) -> list[Result]:
    """``[run(item) for item in items]``, with up to ``workers`` forked processes taking the items in order as
    they free up (put the longest runs first). ``workers ≤ 1`` or a single item
    runs here, in order, without ``worker_setup``. A run's exception is raised here; a worker that dies (killed
    for memory, say) raises :class:`RunFailed` naming its exit code."""
    if workers <= 1 or len(items) <= 1:
        return [run(item) for item in items]
    context = multiprocessing.get_context("fork")
    tasks, results = context.SimpleQueue(), context.Queue()
    count = min(workers, len(items))

    def work() -> None:
        if worker_setup is not None:
            worker_setup()
        while (index := tasks.get()) is not None:
            try:
                results.put((index, True, run(items[index])))
            except BaseException as error:  # noqa: BLE001 - every failure must reach the parent
                log.exception("side-by-side run %d of %d failed", index + 1, len(items))
                results.put((index, False, _portable(error)))

    processes = [context.Process(target=work, daemon=True) for _ in range(count)]
    for process in processes:
        process.start()
    for index in [*range(len(items)), *[None] * count]:  # after the start: a full pipe must not block the parent first
        tasks.put(index)
    try:
        return _collect(results, processes, len(items))
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()


def _collect(results, processes: list, expected: int) -> list:
    """The results by item index, as they arrive; raise the first failure."""
    done: dict[int, object] = {}
    while len(done) < expected:
        try:
            index, ok, value = results.get(timeout=POLL_S)
        except queue.Empty:
            dead = [process.exitcode for process in processes if process.exitcode not in (None, 0)]
            if dead:
                raise RunFailed(f"a side-by-side run's process died (exit code {dead[0]}; "
                                "a negative code is the signal, e.g. -9 when killed for memory)") from None
            continue
        if not ok:
            raise value
        done[index] = value
    return [done[index] for index in range(expected)]


def _portable(error: BaseException) -> BaseException:
    """The exception itself when it pickles (its type and message reach the parent), else a :class:`RunFailed`
    carrying its type name and message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any pickling failure
        return RunFailed(f"{type(error).__name__}: {error}")
