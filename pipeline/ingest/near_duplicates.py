"""Near-duplicate images across splits: the same picture twice under two names or two patients.

Real collections hold them (re-exports, re-scans, curated sets scraped from several sources): on one public 4-class
MRI set, 375 of 1,318 test images had a training image of the same label with a cosine similarity above 0.95 in
pixel space. Every metric on such a test split is inflated, and no split by patient or block can see it, because
the copies carry different keys.

Each chip gets one cheap fingerprint, once: its channel mean resized to 32 × 32 by area, band-passed (minus its
Gaussian blur, σ 2 thumbnail pixels), minus its mean, scaled to unit length. Two chips are near-duplicates when
their fingerprints' dot product (the correlation of the two band-passed thumbnails) is at least the threshold:
brightness and contrast changes of a re-export do not hide a copy, and the band-pass keeps the shape every image of
a kind shares (a chest, a body outline) from making two patients look alike. Measured on real sets (test images
against 1,500 training images, 64 px): a plain 16 × 16 thumbnail put the median nearest neighbour of
PneumoniaMNIST's test X-rays at 0.91 and flagged 6 of 300 at 0.95; the band-pass puts it at 0.69 and flags none,
while it still flags 16 of BUSI's 116 test images (a set known to hold duplicates) and gives an exact copy
with other brightness and contrast 1.0. Ingest
reports, per pair of splits, how many chips of the later split have a near-duplicate in the earlier one, and how
many of those share its label (``ingest.near_duplicates: report``); ``drop`` also removes the val / test chips
that have one in train, the ones that inflate the metrics (train is left as it is, so its statistics are too);
``group`` keeps every chip and joins the patients (or spatial blocks) of near-duplicates before the split is
drawn, so each picture and its copies land in one split (with a ``split`` column from labels.csv there is no
split to draw: ``group`` then reports only, and says so).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.ingest.spill import SpilledArrays

THUMBNAIL = 32
BAND_PASS_SIGMA = 2.0  # thumbnail pixels
PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))
BLOCK_VALUES = 2**24  # a similarity block holds at most this many float32 (64 MB), whatever the number of chips
SCREEN_DIMS = 128  # principal directions in which pairs are screened before the exact 1,024-number product
SCREEN_SLACK = 1e-3  # on the squared distance: the screen's float32 rounding never drops a true pair
SCREEN_FROM_PAIRS = 10**8  # fewer pairs than this (10,000 × 10,000) are compared at once: the screen's basis
# (a 1,024² covariance and its eigenvectors, ~0.4 s) would cost more than it saves


def fingerprint(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(THUMBNAIL²,) float32: the chip's channel mean (invalid pixels as 0), area-resized, band-passed, zero-mean,
    unit length (all zeros for a flat chip, which then matches nothing)."""
    plane = np.where(valid, np.asarray(image, np.float32).mean(axis=0), 0.0).astype(np.float32)
    thumb = cv2.resize(plane, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA).astype(np.float64)
    thumb = (thumb - cv2.GaussianBlur(thumb, (0, 0), BAND_PASS_SIGMA)).ravel()
    thumb -= thumb.mean()
    norm = np.linalg.norm(thumb)
    return (thumb / norm if norm > 1e-9 else np.zeros_like(thumb)).astype(np.float32)


def fingerprints(images: Iterable[np.ndarray], valid: Iterable[np.ndarray],
                 store: SpilledArrays | None = None) -> np.ndarray | SpilledArrays:
    """(N, THUMBNAIL²) fingerprints of chips read one at a time; with ``store`` (an empty spilled list) they go
    to its file instead of memory (4 KB a chip: 1.2 GB for an archive of 300,000 chips)."""
    if store is not None:
        for image, mask in zip(images, valid):
            store.append(fingerprint(image, mask))
        return store
    rows = [fingerprint(image, mask) for image, mask in zip(images, valid)]
    return np.stack(rows) if rows else np.zeros((0, THUMBNAIL * THUMBNAIL), np.float32)


def _blocks(prints: np.ndarray | SpilledArrays, indexes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, float32 fingerprints) of ``indexes`` in runs of :func:`_block_rows`, read as they are needed."""
    step = _block_rows()
    for start in range(0, len(indexes), step):
        chunk = indexes[start:start + step]
        block = np.stack(list(prints.iter_items(chunk.tolist()))) if isinstance(prints, SpilledArrays) \
            else prints[chunk]
        yield start, np.asarray(block, np.float32)


def _block_rows() -> int:
    """Rows (and columns) of one similarity block: at most :data:`BLOCK_VALUES` similarities in memory."""
    return max(1, int(BLOCK_VALUES ** 0.5))


class PairScreen:
    """Near-duplicate pairs of two blocks of fingerprints, the exact product computed only for pairs that pass a
    screen in :data:`SCREEN_DIMS` dimensions (8× fewer multiplications: the all-pairs product is O(N²), 44 s of
    a 157,000-chip ingest).

    Why it loses nothing: for unit fingerprints x·y ≥ t exactly when ‖x − y‖² ≤ 2 − 2t, and projecting onto
    orthonormal directions never lengthens x − y, so a pair whose projections are farther apart cannot be a
    near-duplicate. The directions are the fingerprints' principal components (of a regular sample), which keep
    most of the distance between unrelated chips: of 75 million pairs of scene chips, 23 passed. Flat chips
    (all-zero fingerprints) match nothing, as before. A block where the screen passes many pairs is
    computed in full, as are all of them when there are fewer than :data:`SCREEN_FROM_PAIRS`."""

    def __init__(self, prints: np.ndarray | SpilledArrays, threshold: float, pairs: int) -> None:
        self.threshold, self.basis = threshold, None
        if pairs < SCREEN_FROM_PAIRS:
            return
        n = len(prints)
        sample = np.unique(np.linspace(0, max(n - 1, 0), min(n, _block_rows())).astype(np.int64))
        block = next(_blocks(prints, sample), (0, np.zeros((0, THUMBNAIL * THUMBNAIL), np.float32)))[1]
        dims = block.shape[1]
        if dims > SCREEN_DIMS and len(block) > 1:
            _, vectors = np.linalg.eigh(np.cov(block.astype(np.float64), rowvar=False))
            self.basis = np.ascontiguousarray(vectors[:, ::-1][:, :SCREEN_DIMS], np.float32)

    def pairs(self, rows: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) positions of the pairs of ``rows`` × ``columns`` with a product ≥ the threshold."""
        if self.basis is None:
            return _at_least(rows @ columns.T, self.threshold)
        projected_rows, projected_columns = rows @ self.basis, columns @ self.basis
        # x·y − |x|²/2 − |y|²/2 = −‖x − y‖²/2, as one product of augmented vectors
        ones_rows, ones_columns = np.ones((len(rows), 1), np.float32), np.ones((len(columns), 1), np.float32)
        left = np.hstack([projected_rows, -0.5 * (projected_rows ** 2).sum(1, keepdims=True), ones_rows])
        right = np.hstack([projected_columns, ones_columns, -0.5 * (projected_columns ** 2).sum(1, keepdims=True)])
        r, c = _at_least(left @ right.T, -(1.0 - self.threshold) - SCREEN_SLACK / 2)
        if len(r) > rows.shape[0] * columns.shape[0] // 16:  # the screen hardly screens here
            return _at_least(rows @ columns.T, self.threshold)
        exact = np.einsum("ij,ij->i", rows[r], columns[c]) >= self.threshold
        return r[exact], c[exact]


def _at_least(values: np.ndarray, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) positions where ``values`` ≥ ``bound``, row-major as :func:`numpy.nonzero` gives them,
    gathered only from the rows that hold one: nonzero over a whole 4,096² block where hardly any pass took
    29 ms, longer than the product itself (13 s of a 157,000-chip ingest)."""
    passed = values >= bound
    rows = np.flatnonzero(passed.any(axis=1))
    r, c = np.nonzero(passed[rows])
    return rows[r], c


@dataclass
class NearDuplicates:
    """Counts per split pair for the report, and which val / test chips have a near-duplicate in train (``drop``)."""

    counts: dict[str, dict[str, int]]
    in_train: np.ndarray  # (N,) bool: a val / test chip with a near-duplicate in train

    def report(self, threshold: float, dropped: int) -> dict[str, object]:
        return {"similarity_at_least": threshold, "fingerprint": f"{THUMBNAIL}x{THUMBNAIL} channel-mean thumbnail, "
                f"band-pass (sigma {BAND_PASS_SIGMA:g}), zero-mean", **self.counts, "dropped": dropped}


def find_near_duplicates(prints: np.ndarray, splits: Sequence[str], labels: Sequence[str],
                         threshold: float) -> NearDuplicates:
    """For each split pair (a, b) of :data:`PAIRS`: how many chips of b have a near-duplicate in a, and how many
    of those have one with their own (non-empty) label."""
    splits = np.asarray(splits)
    names = np.asarray([str(label) for label in labels])
    labels = np.unique(names, return_inverse=True)[1].reshape(-1)  # integer codes: cheaper to compare
    labels[names == ""] = -1
    counts: dict[str, dict[str, int]] = {}
    in_train = np.zeros(len(splits), bool)
    members = {name: np.flatnonzero(splits == name) for pair in PAIRS for name in pair}
    screen = PairScreen(prints, threshold, sum(len(members[a]) * len(members[b]) for a, b in PAIRS))
    for first, second in PAIRS:
        a, b = members[first], members[second]
        found, same_label = _matches(prints, a, b, labels, screen)
        counts[f"{first}-{second}"] = {"chips": int(found.sum()), "same_label": int(same_label.sum()),
                                       f"of_{second}": int(len(b))}
        if first == "train":
            in_train[b[found]] = True
    return NearDuplicates(counts, in_train)


def _matches(prints: np.ndarray | SpilledArrays, a: np.ndarray, b: np.ndarray, labels: np.ndarray,
             screen: PairScreen) -> tuple[np.ndarray, np.ndarray]:
    """Per chip of ``b``: whether some chip of ``a`` is a near-duplicate, and whether one of those shares its
    label (``labels``: integer codes, −1 = unlabelled). Compared block against block, so memory holds two
    blocks whatever the number of chips."""
    found, same = np.zeros(len(b), bool), np.zeros(len(b), bool)
    if len(a) == 0 or len(b) == 0:
        return found, same
    for row_start, rows in _blocks(prints, b):
        row_labels = labels[b[row_start:row_start + len(rows)]]
        for column_start, columns in _blocks(prints, a):
            pair_rows, pair_columns = screen.pairs(rows, columns)
            found[row_start + pair_rows] = True
            column_labels = labels[a[column_start + pair_columns]]
            shared = (row_labels[pair_rows] >= 0) & (column_labels == row_labels[pair_rows])
            same[row_start + pair_rows[shared]] = True
    return found, same


def near_duplicate_sets(prints: np.ndarray | SpilledArrays, threshold: float) -> np.ndarray:
    """(N,) int: the smallest chip index of each chip's near-duplicate set (pairs at or above ``threshold``,
    joined transitively); a chip without a near-duplicate gets its own index. All pairs are compared, in blocks
    of at most :data:`BLOCK_VALUES` similarities: O(N²) products of 1,024 numbers, O(block) memory."""
    n = len(prints)
    firsts, seconds = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    everything = np.arange(n)
    screen = PairScreen(prints, threshold, n * (n - 1) // 2)
    for row_start, rows in _blocks(prints, everything):
        for column_start, columns in _blocks(prints, everything[row_start:]):
            pair_rows, pair_columns = screen.pairs(rows, columns)
            pair_rows, pair_columns = pair_rows + row_start, pair_columns + row_start + column_start
            firsts.append(pair_rows[pair_columns > pair_rows])
            seconds.append(pair_columns[pair_columns > pair_rows])
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    _, component = connected_components(coo_matrix((np.ones(len(first)), (first, second)), shape=(n, n)),
                                         directed=False)
    smallest = np.full(component.max(initial=-1) + 1, n, np.int64)
    np.minimum.at(smallest, component, np.arange(n))
    return smallest[component]
