"""Ingest's per-chip arrays kept on disk while a folder is read, so that its memory does not grow with the data.

Why: ingest must see every file before it can split the chips, fit a value range on the train split, map an MR
series by its own percentiles or drop constant chips, so it used to hold every chip in memory (~260 real
scenes, 74,589 chips of 64² × 4 bands, peaked at 9.1 GiB). :class:`SpilledArrays` looks like the list it
replaces (``len``, index, assign, ``+=``, iterate, keep a subset) but appends each chip to a raw file as it
arrives and reads or rewrites one chip at a time with positioned file I/O. No memory map: a mapped page
touched once stays resident and counts against the process, a ``pread`` buffer is freed after use.
"""

from __future__ import annotations

import bisect
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from pipeline.data.chips import MASK_IGNORE


LARGE_FILE_BYTES = 256 * 2**20  # a file whose float32 chips would take more goes to the spill as it is read
READ_BLOCK_BYTES = 8 * 2**20  # a pass over the chips reads runs of neighbouring items up to this size at once


class SpilledArrays:
    """A list of arrays of one shape and dtype (fixed by the first one), stored in ``path``.

    ``None`` items are allowed when ``fill`` is given: they are stored as ``fill`` and read back as ``None``
    (chips without a segmentation mask).
    """

    def __init__(self, path: Path, dtype: np.dtype | type, fill: int | None = None,
                 narrow_to: np.dtype | type | None = None) -> None:
        self.path, self.dtype, self.fill = Path(path), np.dtype(dtype), fill
        # how items are stored: ``narrow_to`` while every item holds only its exact values (a GeoTIFF's uint16
        # digital numbers, pending a train-split range: half the bytes of float32), ``dtype`` from the first
        # item that does not (:meth:`_widen`); read back as ``dtype`` either way
        self.stored = np.dtype(narrow_to if narrow_to is not None else dtype)
        self.shape: tuple[int, ...] | None = None
        self.present: list[bool] = []  # physical item → not None
        self.order: list[int] = []  # logical index → physical item (after :meth:`keep`)
        # where physical items live: runs (first physical item, file, first item in that file), file 0 = ``path``,
        # the others adopted (:meth:`adopt`) and named after it
        self.extents: list[tuple[int, int, int]] = [(0, 0, 0)]
        self.adopted: list[str] = []
        self.own_items = 0
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._adopted_fds: list[int] = []

    # the list protocol IngestedChips uses

    def __len__(self) -> int:
        return len(self.order)

    def __iadd__(self, items: Iterable[np.ndarray | None]) -> SpilledArrays:
        for item in items:
            self.append(item)
        return self

    def __iter__(self) -> Iterator[np.ndarray | None]:
        return self.iter_items(range(len(self)))

    def iter_items(self, indexes: Iterable[int]) -> Iterator[np.ndarray | None]:
        """The items at ``indexes``, in that order, each run of items that lie one after another on disk read
        with one ``pread`` of up to :data:`READ_BLOCK_BYTES` (one read per 64 KB chip cost a pass over 61,000
        chips ~4 s of system calls). An item is a view into its run's buffer: copy what must outlive the pass."""
        return self._read_physical([self.order[index] for index in indexes])

    def __getitem__(self, index: int) -> np.ndarray | None:
        item = next(self._read_physical([self.order[index]]))
        return None if item is None else item.copy()  # the caller's own

    def _read_physical(self, physicals: list[int]) -> Iterator[np.ndarray | None]:
        if self.shape is None:
            yield from (None for _ in physicals)
            return
        size, position = self._item_bytes, 0
        longest = max(1, READ_BLOCK_BYTES // max(size, 1))
        while position < len(physicals):
            physical = physicals[position]
            if not self.present[physical]:
                yield None
                position += 1
                continue
            fd, offset = self._locate(physical)
            run = 1
            while run < longest and position + run < len(physicals):
                following = physicals[position + run]
                if not self.present[following] or self._locate(following) != (fd, offset + run * size):
                    break
                run += 1
            block = np.frombuffer(bytearray(os.pread(fd, run * size, offset)), dtype=self.stored)
            if self.stored != self.dtype:
                block = block.astype(self.dtype)
            yield from block.reshape(run, *self.shape)
            position += run

    def __setitem__(self, index: int, value: np.ndarray) -> None:
        physical = self.order[index]
        self._write_at(physical, value)
        self.present[physical] = True

    def append(self, item: np.ndarray | None) -> None:
        if item is None and self.fill is None:
            raise ValueError(f"{self.path.name}: None needs a fill value")
        if self.shape is None and item is not None:
            self.shape = tuple(np.shape(item))
            self._backfill()
        physical = len(self.present)
        start, file, first = self.extents[-1]
        if file != 0 or first + physical - start != self.own_items:  # after an adopted file: a new run
            self.extents.append((physical, 0, self.own_items))
        self.own_items += 1
        self.present.append(item is not None)
        self.order.append(physical)
        if self.shape is not None:
            self._write_at(physical, item)

    def adopt(self, other: SpilledArrays) -> None:
        """Append ``other``'s items (in its order) without copying them: its file is renamed beside this list's
        and read from there (a large scene a reader spilled as it read it was written twice before: 10 GB more
        for one 36000 × 18000 × 4 scene). ``other`` is left empty; a list of another dtype, fill or shape, or
        one without items, is copied instead."""
        if type(other) is not SpilledArrays or other.dtype != self.dtype or other.fill != self.fill or \
                other.shape is None or (self.shape is not None and self.shape != other.shape) or other.adopted:
            self += other
            return
        self._match_storage(other)
        if self.shape is None:
            self.shape = other.shape
            self._backfill()
        target = self.path.with_name(f"{self.path.stem}.{len(self.adopted) + 1}{self.path.suffix}")
        os.replace(other.path, target)  # the descriptor stays valid
        self.adopted.append(target.name)
        self._adopted_fds.append(other._fd)
        other._fd = -1
        start = len(self.present)
        self.extents.append((start, len(self.adopted), 0))
        self.present += other.present
        self.order += [start + physical for physical in other.order]
        other.present, other.order = [], []

    def _match_storage(self, other: SpilledArrays) -> None:
        """Store both lists alike before ``other``'s file joins this one: an empty list takes ``other``'s storage,
        else the narrow one is widened (a scene's scaled reflectances are float32 while this list was still
        uint16: copying its 156,798 chips item by item instead cost 37 s)."""
        if self.stored == other.stored:
            return
        if not self.present:
            self.stored = other.stored
            return
        for values in (self, other):
            if values.stored != values.dtype:
                values._widen()

    def keep(self, keep: Sequence[bool]) -> None:
        """Keep the items where ``keep`` is True (no data is moved)."""
        self.order = [physical for physical, kept in zip(self.order, keep) if kept]

    def subset(self, indexes: Sequence[int]) -> LazySubset:
        """The items at ``indexes``, read one at a time as they are iterated (e.g. the train split's chips)."""
        return LazySubset(self, list(indexes))

    def any_present(self) -> bool:
        return any(self.present[physical] for physical in self.order)

    def close(self) -> None:
        """Close and delete the files."""
        self.detach()
        for path in [self.path, *(self.path.with_name(name) for name in self.adopted)]:
            path.unlink(missing_ok=True)

    def detach(self) -> None:
        """Close the files and keep them (an ingest part's chips, for the merge to read)."""
        for fd in [self._fd, *self._adopted_fds]:
            if fd >= 0:
                os.close(fd)
        self._fd, self._adopted_fds = -1, []

    def layout(self) -> dict:
        """What :func:`reopen` needs besides the folder: the files' names, dtype, shape and item order."""
        return {**self.__getstate__(), "path": self.path.name}

    def __getstate__(self) -> dict:
        """Pickled (a helper process hands its spilled chips to the main process) as the files' paths and layout."""
        return {name: value for name, value in vars(self).items() if name not in ("_fd", "_adopted_fds")}

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)
        self._open(os.O_RDWR)

    def _open(self, flags: int) -> None:
        self._fd = os.open(self.path, flags)
        self._adopted_fds = [os.open(self.path.with_name(name), flags) for name in self.adopted]

    # storage

    @property
    def _item_bytes(self) -> int:
        return math.prod(self.shape) * self.stored.itemsize  # not np.prod: this runs several times per chip

    def _bytes_of(self, value: np.ndarray | None) -> bytes:
        if value is None:
            return np.full(self.shape, self.fill, dtype=self.stored).tobytes()
        if tuple(np.shape(value)) != self.shape:
            raise ValueError(f"{self.path.name}: item of shape {np.shape(value)}, expected {self.shape}")
        data = np.ascontiguousarray(value, dtype=self.dtype).tobytes()
        if self.stored != self.dtype:
            narrow = np.asarray(value).astype(self.stored)
            if narrow.astype(self.dtype).tobytes() == data:  # bit for bit: -0.0 or NaN are not whole numbers here
                return narrow.tobytes()
            self._widen()
        return data

    def _widen(self) -> None:
        """Store items as ``dtype`` from now on: every file written so far is converted once (a folder whose
        first files held whole numbers and a later one does not: SAR in dB, a scaled band)."""
        if self.shape is not None:
            items = [self._fd, *self._adopted_fds]
            for position, fd in enumerate(items):
                items[position] = self._widened_file(fd, self.path if position == 0 else
                                                     self.path.with_name(self.adopted[position - 1]))
            self._fd, self._adopted_fds = items[0], items[1:]
        self.stored = self.dtype

    def _widened_file(self, fd: int, path: Path) -> int:
        wide = path.with_name(path.name + ".wide")
        step, offset = READ_BLOCK_BYTES, 0
        with open(wide, "wb") as out:
            while chunk := os.pread(fd, step, offset):
                out.write(np.frombuffer(chunk, self.stored).astype(self.dtype).tobytes())
                offset += len(chunk)
        os.close(fd)
        os.replace(wide, path)
        return os.open(path, os.O_RDWR)

    def _locate(self, physical: int, writing: bool = False) -> tuple[int, int]:
        """The file descriptor and byte offset of a physical item."""
        if len(self.extents) == 1:
            return self._fd, physical * self._item_bytes
        start, file, first = self.extents[bisect.bisect_right(self.extents, (physical, math.inf)) - 1]
        return (self._adopted_fds[file - 1] if file else self._fd), (first + physical - start) * self._item_bytes

    def _write_at(self, physical: int, value: np.ndarray | None) -> None:
        data = self._bytes_of(value)  # first: it may widen the storage, which moves every item
        fd, offset = self._locate(physical, writing=True)
        os.pwrite(fd, data, offset)

    def _backfill(self) -> None:
        """The ``None`` items that came before the first array get their fill now that the shape is known."""
        for physical, present in enumerate(self.present):
            if not present:
                self._write_at(physical, None)


def reopen(folder: Path, layout: dict) -> SpilledArrays:
    """A list saved by :meth:`SpilledArrays.layout` from its file in ``folder``, read-only: the merge of ingest
    parts reads them (from wherever the parts' folder is mounted) and never changes them."""
    values = SpilledArrays.__new__(SpilledArrays)
    vars(values).update({**layout, "path": Path(folder) / layout["path"]})
    values._open(os.O_RDONLY)
    return values


class ChainedArrays(SpilledArrays):
    """Several spilled lists read as one, in order (ingest parts at their merge), each part through its own
    storage. An item assigned (an MR series' mapping applied at the merge) is written to this list's own file,
    so the parts' files stay as their jobs wrote them and the merge can run again."""

    def __init__(self, parts: Sequence[SpilledArrays], path: Path) -> None:
        shapes = {values.shape for values in parts if values.shape is not None}
        if len(shapes) > 1:
            raise ValueError(f"{path.name}: parts hold items of different shapes {sorted(shapes)}")
        super().__init__(path, parts[0].dtype, parts[0].fill)
        self.shape = shapes.pop() if shapes else None
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(values.present) for values in parts]).tolist()
        self.present = [flag for values in parts for flag in values.present]
        self.order = [start + physical for start, values in zip(self.starts, parts) for physical in values.order]
        self.overlay: dict[int, int] = {}  # physical item → its slot in this list's own file

    def append(self, item: np.ndarray | None) -> None:
        raise TypeError(f"{self.path.name}: chained parts take no new items")

    def detach(self) -> None:
        super().detach()
        for values in self.parts:
            values.detach()

    def __getstate__(self) -> dict:
        raise TypeError(f"{self.path.name}: chained parts stay in the process that merges them")

    def _locate(self, physical: int, writing: bool = False) -> tuple[int, int]:
        if writing and physical not in self.overlay:
            self.overlay[physical] = len(self.overlay)
        return self._fd, self.overlay[physical] * self._item_bytes

    def _read_physical(self, physicals: list[int]) -> Iterator[np.ndarray | None]:
        """Runs of items from one part are read by that part (its own storage); assigned items from the overlay."""
        position = 0
        while position < len(physicals):
            source = self._source(physicals[position])
            run = 1
            while position + run < len(physicals) and self._source(physicals[position + run]) == source:
                run += 1
            chunk = physicals[position:position + run]
            if source < 0:
                yield from super()._read_physical(chunk)
            else:
                yield from self.parts[source]._read_physical([p - self.starts[source] for p in chunk])
            position += run

    def _source(self, physical: int) -> int:
        """−1 for an item assigned at the merge, else the index of the part holding it."""
        return -1 if physical in self.overlay else bisect.bisect_right(self.starts, physical) - 1


def extend(values: list | SpilledArrays, items: list | SpilledArrays) -> None:
    """``values += items``; a spilled list takes over a spilled ``items``' file instead of copying it."""
    if isinstance(values, SpilledArrays) and isinstance(items, SpilledArrays):
        values.adopt(items)
    else:
        values += items


def keep_items(values: list | SpilledArrays, keep: Sequence[bool]) -> list | SpilledArrays:
    """``values`` without the items where ``keep`` is False: a spilled list in place, a list as a new list."""
    if isinstance(values, SpilledArrays):
        values.keep(keep)
        return values
    return [value for value, kept in zip(values, keep) if kept]


def spilled_lists(folder: Path) -> dict[str, SpilledArrays]:
    """Empty spilled lists for a set of chips (images, valid masks, segmentation masks) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return {"images": SpilledArrays(folder / "images.bin", np.float32, narrow_to=np.uint16),
            "valid": SpilledArrays(folder / "valid.bin", np.bool_),
            "masks": SpilledArrays(folder / "masks.bin", np.uint8, fill=MASK_IGNORE)}


def close_spilled(*lists: list | SpilledArrays) -> None:
    """Delete the spilled ones of ``lists`` and their folders (with anything a reader left there); lists held in
    memory are left as they are."""
    spilled = [values for values in lists if isinstance(values, SpilledArrays)]
    for values in spilled:
        values.close()
    for folder in {values.path.parent for values in spilled}:
        shutil.rmtree(folder, ignore_errors=True)


class LazySubset:
    """Some items of a :class:`SpilledArrays`, read when iterated or indexed (iterable more than once)."""

    def __init__(self, items: SpilledArrays, indexes: list[int]) -> None:
        self.items, self.indexes = items, indexes

    def __len__(self) -> int:
        return len(self.indexes)

    def __getitem__(self, position: int) -> np.ndarray | None:
        return self.items[self.indexes[position]]

    def __iter__(self) -> Iterator[np.ndarray | None]:
        return self.items.iter_items(self.indexes)


def iter_items(values: Sequence | SpilledArrays, indexes: Iterable[int]) -> Iterator:
    """``values[i]`` for each of ``indexes``: a spilled list reads neighbouring items together."""
    if isinstance(values, SpilledArrays):
        return values.iter_items(indexes)
    return (values[index] for index in indexes)


def write_npy(path: Path, items: Iterable[np.ndarray], count: int, shape: tuple[int, ...], dtype: np.dtype | type,
              chunk: int = 256) -> None:
    """An ``.npy`` of ``count`` items of ``shape`` written as they come, ``chunk`` at a time: the same bytes as
    ``np.save(path, np.stack(items))`` without the stack in memory."""
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (count, *shape)}
    written = 0
    with open(path, "wb") as stream:
        np.lib.format.write_array_header_1_0(stream, header)
        buffer: list[np.ndarray] = []
        for item in items:
            buffer.append(np.ascontiguousarray(item, dtype=dtype))
            if len(buffer) == chunk:
                stream.write(np.stack(buffer).tobytes())
                written, buffer = written + len(buffer), []
        if buffer:
            stream.write(np.stack(buffer).tobytes())
            written += len(buffer)
    if written != count:
        raise ValueError(f"{path.name}: {written} items written, {count} announced")
