"""Leakage-free train / val / test splits.

Images of one patient, and chips of one neighbourhood of a scene, are correlated: if they straddle train and
test every metric is inflated (docs/background.md §3, §4). So splits are drawn over *groups*, never over items:

* :func:`group_split`: a group is a (hashed) patient; optionally stratified by label.
* :func:`spatial_block_split`: a group is a spatial block ``(scene, row // block, col // block)``; train chips
  too close to a val/test chip of the same scene can be dropped as ``"buffer"``.
* :func:`check_no_leakage`: the independent check ingest runs on what it is about to write.

Groups are allocated to splits by counts of groups (not items), deterministically from ``seed`` and
independently of item order.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
BUFFER = "buffer"
_PAIRS_PER_CHUNK = 4_000_000  # bounds the (train × other) distance matrix in the buffer step


def validate_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Check ``(train, val, test)`` fractions: three finite values ≥ 0 that sum to 1 (± 1e-6)."""
    values = tuple(float(f) for f in fractions)
    if len(values) != len(SPLITS):
        raise ValueError(f"split fractions need 3 values (train, val, test), got {values}")
    if any(not np.isfinite(f) or f < 0 for f in values):
        raise ValueError(f"split fractions must be finite and >= 0, got {values}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {values} (sum {sum(values):.6g})")
    return values  # type: ignore[return-value]


def _seat_counts(n: int, fractions: np.ndarray, deficit: np.ndarray, first_to_train: bool) -> np.ndarray:
    """Hand ``n`` groups to the splits one at a time, each to the split furthest below its quota.

    ``deficit`` carries over the rounding of earlier strata so totals track the fractions across classes; it
    is updated in place. With ``first_to_train`` the first group of the stratum goes to train, so every class
    is seen in training when possible.
    """
    quota = n * fractions + deficit
    counts = np.zeros(len(fractions), dtype=np.int64)
    for seat in range(n):
        if seat == 0 and first_to_train:
            chosen = 0
        else:
            open_splits = np.where(fractions > 0, quota - counts, -np.inf)
            chosen = int(np.argmax(open_splits))
        counts[chosen] += 1
    deficit[:] = quota - counts
    return counts


def _fill_empty_splits(assignment: dict[str, int], strata: dict[str, str], fractions: np.ndarray) -> None:
    """Move single groups so that every split with a non-zero fraction gets at least one group.

    Donors are the largest split; from train it only takes a group whose class keeps another train group.
    """
    needed = int((fractions > 0).sum())
    if len(assignment) < needed:
        return
    for target in np.flatnonzero(fractions > 0):
        counts = Counter(assignment.values())
        if counts[int(target)] > 0:
            continue
        for donor, _ in counts.most_common():
            if counts[donor] < 2:
                break
            candidates = [g for g, s in assignment.items() if s == donor]
            if donor == 0:
                train_per_class = Counter(strata[g] for g in candidates)
                candidates = [g for g in candidates if train_per_class[strata[g]] > 1] or candidates
            assignment[sorted(candidates)[-1]] = int(target)
            break


def _assign_groups(unique_groups: Sequence[str], strata: dict[str, str],
                   fractions: tuple[float, float, float], seed: int) -> dict[str, int]:
    """Map each group to a split index, stratified by ``strata`` (group → class); deterministic in seed."""
    rng = np.random.default_rng(seed)
    frac = np.asarray(fractions, dtype=np.float64)
    shuffled = [unique_groups[i] for i in rng.permutation(len(unique_groups))]
    by_class: dict[str, list[str]] = defaultdict(list)
    for group in shuffled:
        by_class[strata[group]].append(group)
    deficit = np.zeros(len(SPLITS))
    assignment: dict[str, int] = {}
    for label in sorted(by_class):
        members = by_class[label]
        counts = _seat_counts(len(members), frac, deficit, first_to_train=frac[0] > 0)
        starts = np.concatenate([[0], np.cumsum(counts)])
        for split, (start, stop) in enumerate(zip(starts[:-1], starts[1:], strict=True)):
            assignment.update({group: split for group in members[start:stop]})
    _fill_empty_splits(assignment, strata, frac)
    return assignment


def _group_labels(groups: Sequence[str], labels: Sequence[str] | None) -> dict[str, str]:
    """Each group's stratum: its most frequent label (ties → smallest label); ``""`` without labels."""
    if labels is None:
        return {group: "" for group in groups}
    if len(labels) != len(groups):
        raise ValueError(f"labels ({len(labels)}) and groups ({len(groups)}) differ in length")
    per_group: dict[str, Counter] = defaultdict(Counter)
    for group, label in zip(groups, labels, strict=True):
        per_group[group][str(label)] += 1
    return {g: min(c.items(), key=lambda item: (-item[1], item[0]))[0] for g, c in per_group.items()}


def group_split(groups: Sequence[str], fractions: tuple[float, float, float], seed: int,
                labels: Sequence[str] | None = None) -> np.ndarray:
    """Split items so that all items of one group (e.g. a hashed patient) land in one split.

    Groups are shuffled with ``seed`` and allocated to splits in proportion to ``fractions`` (counted in
    groups). With ``labels``, allocation is stratified by each group's majority label: every class gets a
    train group first (when the train fraction is > 0), then groups go to the split furthest below its
    quota, with rounding carried over between classes so totals stay close to the fractions. Every split with
    a non-zero fraction gets at least one group when there are enough groups.

    Args:
        groups: group key per item, length N.
        fractions: (train, val, test), each ≥ 0, summing to 1.
        seed: random seed; the same seed and group set always give the same split, whatever the item order.
        labels: optional class label per item, length N.

    Returns:
        (N,) str array of ``"train"`` / ``"val"`` / ``"test"``.
    """
    fractions = validate_fractions(fractions)
    groups = [str(g) for g in groups]
    strata = _group_labels(groups, labels)
    unique = sorted(strata)
    assignment = _assign_groups(unique, strata, fractions, seed)
    return np.array([SPLITS[assignment[g]] for g in groups], dtype="<U6")


def _infer_chip_size(scene_ids: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> int:
    """Grid step of the chips: smallest positive row or column offset difference within a scene.

    A too large estimate (no two adjacent chips) only makes the buffer more conservative.
    """
    steps: list[int] = []
    for scene in np.unique(scene_ids):
        in_scene = scene_ids == scene
        for offsets in (rows[in_scene], cols[in_scene]):
            diffs = np.diff(np.unique(offsets))
            if diffs.size:
                steps.append(int(diffs.min()))
    return min(steps) if steps else 0


def _buffered(train_rc: np.ndarray, other_rc: np.ndarray, chip_size: int, buffer_px: int) -> np.ndarray:
    """(n_train,) bool: train chips whose footprint lies within ``buffer_px`` pixels of any other chip.

    The gap between two ``chip_size`` squares is ``max(|Δrow|, |Δcol|) - chip_size`` pixels (Chebyshev);
    a chip is buffered when that gap is < ``buffer_px``.
    """
    out = np.zeros(len(train_rc), dtype=bool)
    if len(other_rc) == 0:
        return out
    chunk = max(1, _PAIRS_PER_CHUNK // len(other_rc))
    for start in range(0, len(train_rc), chunk):
        block = train_rc[start:start + chunk]
        gap = np.abs(block[:, None, :] - other_rc[None, :, :]).max(axis=2) - chip_size
        out[start:start + chunk] = (gap < buffer_px).any(axis=1)
    return out


def spatial_block_split(scene_ids: Sequence[str], rows: Sequence[int], cols: Sequence[int],
                        block_size_px: int, fractions: tuple[float, float, float], seed: int,
                        buffer_px: int = 0, chip_size_px: int | None = None,
                        cells: Sequence[str] | None = None, links: Sequence[int] | None = None) -> np.ndarray:
    """Split chips by spatial blocks, so neighbouring (correlated) chips never straddle train and test.

    A block is ``(scene, row // block_size_px, col // block_size_px)`` from each chip's top-left offset;
    whole blocks are allocated to splits as in :func:`group_split` (counted in blocks). With
    ``buffer_px > 0``, a train chip whose footprint comes closer than ``buffer_px`` pixels to a val or test
    chip of the same scene is marked ``"buffer"`` (callers drop it): afterwards every train pixel is at least
    ``buffer_px`` pixels (Chebyshev) from any val/test pixel. Val and test chips are never buffered.

    Args:
        scene_ids: scene per chip, length N.
        rows: chip top-left row offsets in pixels, length N.
        cols: chip top-left column offsets in pixels, length N.
        block_size_px: block side in pixels; choose it larger than the spatial correlation range.
        fractions: (train, val, test) fractions of blocks, each ≥ 0, summing to 1.
        seed: random seed (deterministic).
        buffer_px: minimum gap in pixels kept between train and val/test chips; 0 disables buffering.
        chip_size_px: chip side in pixels, for the footprint; None infers it as the chips' grid step.
        cells: per chip, the map cell its centre falls in (:func:`map_cells`; ``""`` when not georeferenced):
            blocks of different scenes that share a cell are one group (:func:`join_blocks_across_files`).
        links: per chip, a link id (e.g. its near-duplicate set): blocks whose chips share one are one group.

    Returns:
        (N,) str array of ``"train"`` / ``"val"`` / ``"test"`` / ``"buffer"``.
    """
    fractions = validate_fractions(fractions)
    if block_size_px <= 0 or buffer_px < 0:
        raise ValueError(f"block_size_px must be > 0 and buffer_px >= 0, got {block_size_px}, {buffer_px}")
    scenes = np.array([str(s) for s in scene_ids])
    rows_a, cols_a = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    if not len(scenes) == len(rows_a) == len(cols_a):
        raise ValueError(f"scene_ids, rows, cols differ in length: "
                         f"{len(scenes)}, {len(rows_a)}, {len(cols_a)}")
    block_rows, block_cols = rows_a // block_size_px, cols_a // block_size_px
    blocks = [f"{s}\x00{r}\x00{c}" for s, r, c in zip(scenes, block_rows, block_cols, strict=True)]
    if cells is not None:
        blocks = join_blocks_across_files(blocks, scenes, cells)
    if links is not None:
        blocks = join_units(blocks, links)
    splits = group_split(blocks, fractions, seed)
    if buffer_px == 0 or len(splits) == 0:
        return splits
    chip = _infer_chip_size(scenes, rows_a, cols_a) if chip_size_px is None else int(chip_size_px)
    coords = np.stack([rows_a, cols_a], axis=1)
    for scene in np.unique(scenes):
        train = np.flatnonzero((scenes == scene) & (splits == "train"))
        other = np.flatnonzero((scenes == scene) & (splits != "train"))
        splits[train[_buffered(coords[train], coords[other], chip, buffer_px)]] = BUFFER
    log.info("spatial split: %d blocks, %d of %d chips in the buffer", len(set(blocks)),
             int((splits == BUFFER).sum()), len(splits))
    return splits


def map_cells(crs: Sequence[str], transforms: Sequence[str], chip_size_px: int, block_size_px: int) -> list[str]:
    """Per chip, the cell of a map-wide grid (one per CRS, cells of ``block_size_px`` × the chip's pixel size, from
    the CRS's origin) that the chip's centre falls in; ``""`` for a chip without a CRS. ``transforms`` are the
    manifest's ``"a b c d e f"`` affine strings of each chip's top-left."""
    cells = []
    for system, transform in zip(crs, transforms, strict=True):
        if not system or not transform:
            cells.append("")
            continue
        a, b, c, d, e, f = (float(v) for v in str(transform).split())
        half = chip_size_px / 2
        x, y = c + a * half + b * half, f + d * half + e * half
        size = block_size_px * max(abs(a), abs(e))
        cells.append(f"{system}\x00{int(np.floor(x / size))}\x00{int(np.floor(y / size))}")
    return cells


class _Unions:
    """Union-find over string keys; each set is named by its smallest key, so results do not depend on order."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.parent: dict[str, str] = {key: key for key in keys}

    def root(self, key: str) -> str:
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def join(self, keys: Sequence[str]) -> None:
        first, *others = sorted(keys)
        for other in others:
            low, high = sorted((self.root(first), self.root(other)))
            self.parent[high] = low


def join_units(units: Sequence[str], links: Sequence[int]) -> list[str]:
    """Units (patient groups, spatial blocks) whose chips share a link id become one unit, named by the smallest:
    e.g. links = near-duplicate sets, so copies of one picture under two patients can never straddle splits."""
    unions = _Unions(units)
    by_link: dict[int, set[str]] = defaultdict(set)
    for unit, link in zip(units, links, strict=True):
        by_link[int(link)].add(unit)
    for members in by_link.values():
        if len(members) > 1:
            unions.join(list(members))
    return [unions.root(unit) for unit in units]


def join_blocks_across_files(blocks: Sequence[str], scenes: Sequence[str], cells: Sequence[str]) -> list[str]:
    """Blocks with chips in a map cell that chips of *more than one* scene fall in become one group, keyed by the
    smallest of their block keys: two tiles of the same place (re-exports, overlapping acquisitions, a tile set cut
    from one mosaic) can then never straddle train and test, whichever of a scene's blocks overlap the other's.
    Cells of one scene alone join nothing (its own grid already separates its blocks), so a folder of scenes that
    do not overlap keeps its blocks and its split."""
    unions = _Unions(blocks)
    by_cell: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))  # cell → scene → its blocks
    for block, scene, cell in zip(blocks, scenes, cells, strict=True):
        if cell:
            by_cell[cell][str(scene)].add(block)
    for members in by_cell.values():
        if len(members) > 1:
            unions.join(list(set().union(*members.values())))
    joined = [unions.root(block) for block in blocks]
    merged = len(set(blocks)) - len(set(joined))
    if merged:
        log.info("spatial split: %d blocks joined to blocks of other files at the same place", merged)
    return joined


def check_no_leakage(groups: Sequence[str], splits: Sequence[str]) -> None:
    """Raise if any group appears in more than one of train / val / test (``"buffer"`` items are ignored).

    The message names one leaked group, so pass pseudonymised keys (hashed patients, block ids), never PHI.

    Raises:
        ValueError: a group in two splits, an unknown split name, or inputs of different lengths.
    """
    if len(groups) != len(splits):
        raise ValueError(f"groups ({len(groups)}) and splits ({len(splits)}) differ in length")
    seen: dict[str, set[str]] = defaultdict(set)
    for group, split in zip(groups, splits, strict=True):
        split = str(split)
        if split == BUFFER:
            continue
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS + (BUFFER,)}")
        seen[str(group)].add(split)
    leaked = sorted(g for g, found in seen.items() if len(found) > 1)
    if leaked:
        raise ValueError(f"split leakage: group {leaked[0]!r} is in {sorted(seen[leaked[0]])}"
                         f" ({len(leaked)} leaked groups in total)")
