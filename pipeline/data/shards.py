"""One (N, …) array stored as ``.npy`` shards of bounded size, written as the items come and read memory-mapped.

Why: a hospital archive's cache can be tens of GB; one file per array that size is awkward to copy, push to a DVC
remote or object store, or read in part. Shards of at most :data:`SHARD_BYTES` keep each file manageable. The
first shard keeps the array's plain name (``chips.npy``), later ones are numbered (``chips-1.npy``, …), so a
cache that fits one shard is the plain ``.npy`` it always was; the shards' own headers are the index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

SHARD_BYTES = 1 << 30  # 1 GiB


def shard_paths(path: Path) -> list[Path]:
    """The shard files of the array stored at ``path`` (``<stem>.npy``, then ``<stem>-1.npy``, …), in order."""
    numbered = sorted(path.parent.glob(f"{path.stem}-*.npy"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [path, *numbered] if path.exists() else []


def write_stacked(path: Path, arrays: Iterable[np.ndarray], dtype: np.dtype | type | None = None,
                  count: int | None = None, shape: tuple[int, ...] | None = None, chunk: int = 256,
                  shard_bytes: int = SHARD_BYTES) -> None:
    """Same-shaped arrays as one (N, …) array in ``.npy`` shards of at most ``shard_bytes`` (at least one item
    each), ``chunk`` items at a time: one shard is the bytes of ``np.save(path, np.stack(arrays))`` without the
    stack in memory. ``count`` and ``shape`` default to ``len(arrays)`` and the first array's, ``dtype`` to the
    first array's."""
    count = len(arrays) if count is None else count
    items = iter(arrays)
    first = next(items)
    dtype = np.dtype(first.dtype if dtype is None else dtype)
    shape = tuple(np.shape(first) if shape is None else shape)
    per_shard = max(1, shard_bytes // max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize))
    stream = _chained(first, items)
    written, shard = 0, 0
    while True:
        rows = min(per_shard, count - written)
        target = path if shard == 0 else path.with_name(f"{path.stem}-{shard}.npy")
        got = _write_shard(target, stream, rows, shape, dtype, chunk)
        written, shard = written + got, shard + 1
        if got < rows or written >= count:
            break
    extra = next(stream, None) is not None
    if extra or written != count:
        raise ValueError(f"{path.name}: {'more than ' if extra else ''}{written} arrays written, {count} announced")


def _chained(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _write_shard(path: Path, items: Iterator[np.ndarray], rows: int, shape: tuple[int, ...], dtype: np.dtype,
                 chunk: int) -> int:
    """Write the next ``rows`` items as one ``.npy``; returns how many there were (fewer when items ran out)."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, *shape)}
    written, buffer = 0, []
    with open(path, "wb") as stream:
        np.lib.format.write_array_header_1_0(stream, header)
        for _ in range(rows):
            item = next(items, None)
            if item is None:
                break
            buffer.append(item)
            if len(buffer) == chunk:
                stream.write(np.ascontiguousarray(np.stack(buffer), dtype=dtype).data)
                written, buffer = written + len(buffer), []
        if buffer:
            stream.write(np.ascontiguousarray(np.stack(buffer), dtype=dtype).data)
            written += len(buffer)
    return written


def load_stacked(path: Path) -> np.ndarray | Shards:
    """The array stored at ``path``, memory-mapped: the plain array for one shard, else a :class:`Shards`."""
    parts = [np.load(part, mmap_mode="r") for part in shard_paths(path)]
    if not parts:
        raise FileNotFoundError(path)
    return parts[0] if len(parts) == 1 else Shards(parts)


class Shards:
    """Several memory-mapped (n_i, …) arrays indexed as their concatenation (an int, a slice, an index array or a
    boolean mask along the first axis); each read touches only the shards it needs."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.starts = np.cumsum([0, *(len(part) for part in parts)])
        self.shape = (int(self.starts[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, int | np.integer):
            position = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= position < len(self):
                raise IndexError(f"index {index} out of range for {len(self)} items")
            shard = int(np.searchsorted(self.starts, position, side="right")) - 1
            return np.asarray(self.parts[shard][position - self.starts[shard]])
        positions = np.arange(len(self))[index]
        out = np.empty((len(positions), *self.shape[1:]), self.dtype)
        shards = np.searchsorted(self.starts, positions, side="right") - 1
        for shard in np.unique(shards):
            chosen = shards == shard
            out[chosen] = self.parts[shard][positions[chosen] - self.starts[shard]]
        return out
