"""The decoded chip cache: the one module that writes (:func:`write_chipset`, called by ingest) and reads
(:func:`load_chipset`, every later stage) it.

Layout of ``data/ingest/<domain>/`` (one folder, renamed into place atomically). Each ``.npy`` array larger than
1 GiB is split into shards (``chips.npy``, ``chips-1.npy``, …; :mod:`pipeline.data.shards`), read as one:

* ``chips.npy``    – (N, C, S, S) uint16: the [0, 1] values (CT: one HU window per channel; EO: reflectance)
  × 65535, rounded (:data:`UNIT_SCALE`; half the bytes of float32, error ≤ 7.7e-6, uniform over the range,
  where float16 keeps only 11 bits near 1); memory-mapped on read and handed out as float32
  (:class:`UnitChips`), so an epoch never re-decodes DICOM or GeoTIFF. Caches written before this format
  (float32 ``chips.npy``) read the same way.
* ``valid_bits.npy`` – (N, ⌈S·S / 8⌉) uint8: the (S, S) valid masks (False at nodata / padding) packed 8 pixels
  to a byte (:class:`PackedMasks`); older caches hold ``valid.npy``, (N, S, S) bool.
* ``manifest.csv`` – one row per chip: id, source file (relative), hashed group, split, label, grid position,
  CRS and affine transform (remote sensing). No patient identifier is ever written here.
* ``masks.npy``    – optional (N, S, S) uint8 segmentation class ids, 255 = ignore (nodata, padding, unlabelled).
* ``boxes.json``   – optional object boxes per chip in chip pixels, ``{"classes": [...], "boxes": [per chip:
  null (unannotated) | [[x0, y0, x1, y1, class_index], ...]]}`` in manifest order (:mod:`pipeline.ingest.boxes`
  maps a source's COCO file onto chips).
* ``stats.json``   – per-channel mean/std from the **train split only** (robust: 2–98 % clipped), channel
  and class names, counts. Every consumer standardises with these numbers; nothing recomputes them.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.atomic import read_json
from pipeline.data.shards import load_stacked, write_stacked

MANIFEST_FIELDS = ("chip_id", "source", "frame", "group", "split", "label", "row", "col", "crs", "transform")
UNLABELLED = -1
MASK_IGNORE = 255
BOX_CACHE = "boxes.json"
UNIT_SCALE = 65535  # chips.npy stores round(value × UNIT_SCALE) as uint16


def quantise_unit(image: np.ndarray) -> np.ndarray:
    """[0, 1] values → the stored uint16 (values outside are clipped: the cache holds the augmentation space)."""
    return np.rint(np.clip(image, 0.0, 1.0) * UNIT_SCALE).astype(np.uint16)


class UnitChips:
    """The stored chips, indexed like the (N, C, S, S) array they stand for and read as float32 in [0, 1]."""

    def __init__(self, stored: np.ndarray) -> None:
        self.stored = stored
        self.shape, self.dtype = stored.shape, np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.stored)

    def __getitem__(self, index) -> np.ndarray:
        chips = np.asarray(self.stored[index])
        if chips.dtype == np.uint16:
            return chips.astype(np.float32) / np.float32(UNIT_SCALE)
        return chips.astype(np.float32, copy=False)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:].astype(dtype or np.float32, copy=False)


class PackedMasks:
    """(N, S, S) bool masks stored packed (N, ⌈S·S / 8⌉), indexed like the unpacked array."""

    def __init__(self, bits: np.ndarray, size: tuple[int, int]) -> None:
        self.bits, self.size = bits, tuple(size)
        self.shape, self.dtype = (len(bits), *self.size), np.dtype(bool)

    def __len__(self) -> int:
        return len(self.bits)

    def __getitem__(self, index) -> np.ndarray:
        bits = np.asarray(self.bits[index])
        pixels = self.size[0] * self.size[1]
        return np.unpackbits(bits, axis=-1, count=pixels).reshape(*bits.shape[:-1], *self.size).astype(bool)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:].astype(dtype or bool, copy=False)


def pack_mask(mask: np.ndarray) -> np.ndarray:
    return np.packbits(np.asarray(mask, dtype=bool).reshape(-1))


@dataclass
class ChipSet:
    """Chips of one domain with their split, label and normalisation statistics."""

    images: np.ndarray | UnitChips  # (N, C, S, S) float32 in [0, 1] when indexed
    valid: np.ndarray | PackedMasks  # (N, S, S) bool when indexed
    manifest: list[dict[str, str]]
    classes: list[str]
    channel_names: list[str]
    mean: np.ndarray  # (C,) float32
    std: np.ndarray  # (C,) float32
    masks: np.ndarray | None = None  # (N, S, S) uint8 class ids, MASK_IGNORE where not to be scored
    mask_classes: list[str] = field(default_factory=list)
    boxes: list[np.ndarray | None] | None = None  # per chip (M, 5) x0, y0, x1, y1, class_index; None = unannotated
    box_classes: list[str] = field(default_factory=list)
    split: np.ndarray = field(init=False)
    labels: np.ndarray = field(init=False)  # (N,) int64 class index, UNLABELLED where none

    def __post_init__(self) -> None:
        self.split = np.array([row["split"] for row in self.manifest])
        index = {name: i for i, name in enumerate(self.classes)}
        self.labels = np.array([index.get(row["label"], UNLABELLED) for row in self.manifest], dtype=np.int64)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    def indices(self, split: str, labelled: bool = False) -> np.ndarray:
        """Chip indexes of one split (optionally only those with a label), in manifest order."""
        keep = self.split == split
        if labelled:
            keep &= self.labels != UNLABELLED
        return np.flatnonzero(keep)


def load_chipset(folder: str | Path) -> ChipSet:
    folder = Path(folder)
    stats = read_json(folder / "stats.json")
    boxes, box_classes = read_box_cache(folder)
    with open(folder / "manifest.csv", newline="") as stream:
        manifest = list(csv.DictReader(stream))
    images = load_stacked(folder / "chips.npy")
    return ChipSet(
        images=UnitChips(images),
        valid=_load_valid(folder, images.shape[-2:]),
        manifest=manifest,
        classes=list(stats["classes"]),
        channel_names=list(stats["channel_names"]),
        mean=np.asarray(stats["mean"], dtype=np.float32),
        std=np.asarray(stats["std"], dtype=np.float32),
        masks=load_stacked(folder / "masks.npy") if (folder / "masks.npy").exists() else None,
        mask_classes=list(stats.get("mask_classes", [])),
        boxes=boxes,
        box_classes=box_classes,
    )


def _load_valid(folder: Path, size: tuple[int, int]) -> np.ndarray | PackedMasks:
    if (folder / "valid.npy").exists():  # a cache written before valid masks were packed
        return np.load(folder / "valid.npy", mmap_mode="r")
    return PackedMasks(load_stacked(folder / "valid_bits.npy"), size)


def write_chipset(out_dir: Path, images: Sequence[np.ndarray], valid: Sequence[np.ndarray], rows: list[dict[str, object]],
                  stats: dict, masks: Sequence[np.ndarray | None] | None = None,
                  boxes: tuple[list, list[str]] | None = None) -> None:
    """Write the cache into ``out_dir`` (the caller renames the folder into place): ``images`` (N, C, S, S)
    in [0, 1] (stored quantised), ``valid`` (N, S, S) (stored packed), the manifest ``rows``, ``stats`` (channel statistics and names, classes,
    counts), optional ``masks`` (N, S, S) uint8 (a chip's None = all ignored) and ``boxes`` (per chip boxes or
    None, box class names). The arrays may be any sequences of per-chip arrays (e.g. ingest's spilled chips):
    they are written chip by chip, never stacked in memory."""
    write_stacked(out_dir / "chips.npy", (quantise_unit(image) for image in images), np.uint16, count=len(images),
                  shape=np.shape(images[0]))
    write_stacked(out_dir / "valid_bits.npy", (pack_mask(mask) for mask in valid), np.uint8, count=len(valid),
                  shape=pack_mask(valid[0]).shape)
    if boxes is not None:
        per_chip, classes = boxes
        (out_dir / BOX_CACHE).write_text(json.dumps({"classes": classes, "boxes": per_chip}) + "\n")
    write_manifest(out_dir / "manifest.csv", rows)
    if masks is not None:
        size = np.shape(valid[0])
        write_stacked(out_dir / "masks.npy", (np.full(size, MASK_IGNORE, np.uint8) if mask is None else mask
                                             for mask in masks), np.uint8, count=len(masks), shape=size)
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")


def read_box_cache(folder: Path) -> tuple[list[np.ndarray | None] | None, list[str]]:
    """Per chip (M, 5) float32 boxes (``None`` = unannotated) and the class names; ``(None, [])`` without a cache."""
    path = folder / BOX_CACHE
    if not path.exists():
        return None, []
    cache = json.loads(path.read_text())
    boxes = [None if found is None else np.asarray(found, np.float32).reshape(-1, 5) for found in cache["boxes"]]
    return boxes, list(cache["classes"])


def write_manifest(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in MANIFEST_FIELDS})


def valid_pixels(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(C, p): each channel's valid pixels in row-major order; a view, not a copy, when every pixel is valid."""
    image, mask = np.asarray(image), np.asarray(mask)
    return image.reshape(image.shape[0], -1) if mask.all() else image[:, mask]


def channel_statistics(images: Iterable[np.ndarray], valid: Iterable[np.ndarray],
                       max_pixels: int = 2_000_000) -> tuple[list, list]:
    """Robust per-channel mean/std over valid pixels: values clipped to their 2–98 percentiles first.

    Clipping keeps a few saturated pixels (bone, clouds, specular water) from inflating the std. Above
    ``max_pixels`` valid pixels, a regular subsample of every ``P // max_pixels + 1``-th (in chip, row, column
    order) keeps memory bounded; the chips are read one at a time, twice (count, then sample), so ``images``
    and ``valid`` may be lazy sequences of the train split's (C, S, S) chips and (S, S) masks.
    """
    total = sum(int(np.count_nonzero(mask)) for mask in valid)
    if total == 0 and not any(True for _ in images):
        raise ValueError("no training chips to compute normalisation statistics from")
    step = total // max_pixels + 1 if total > max_pixels else 1
    sampled, seen = [], 0
    for image, mask in zip(images, valid):
        pixels = valid_pixels(image, mask)  # (C, p) in row-major order
        sampled.append(pixels[:, (-seen) % step::step].copy())  # a view would keep all of `pixels` alive
        seen += pixels.shape[1]
    per_channel = np.concatenate(sampled, axis=1)
    low, high = np.percentile(per_channel, [2, 98], axis=1)
    clipped = np.clip(per_channel, low[:, None], high[:, None]).astype(np.float64)
    # exactly rounded sums (math.fsum): numpy's SIMD reductions round differently with the buffer's alignment,
    # and the statistics must not change with the allocator's history (every later stage standardises by them)
    mean = [math.fsum(row) / len(row) for row in clipped]
    std = [max(math.sqrt(math.fsum((row - m) ** 2) / len(row)), 1e-3) for row, m in zip(clipped, mean)]
    return mean, std
