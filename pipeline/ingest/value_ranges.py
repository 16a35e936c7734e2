"""Physical values → the [0, 1] augmentation space: a configured range, or each channel's robust train-split range.

An archive holds reflectance in [0, 1], reflectance × 10⁴ (Sentinel-2 L2A), 8-bit quick-looks, 11/12/16-bit digital
numbers, int16 and SAR in dB (−35 … +5). One fixed range saturates some of them silently (every dB value below 0
becomes 0.0). So, unless ``data.<domain>.geotiff.value_range`` is set, each channel's range is the
``range_percentiles`` (default 1st and 99th) of the **train split's** valid pixels, computed once after the split
and written to ``stats.json``, like the normalisation statistics (docs/background.md §4: statistics from the train split
only). ``value_range`` may be one ``[low, high]`` for every channel or one per channel; it always wins.

Values map as ``(x − low) / (high − low)`` clipped to [0, 1]; the share of valid pixels clipped at either end is
counted per channel and reported, so a range that cuts off half a band is visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from pipeline.data.chips import valid_pixels
from pipeline.io import UnreadableImageError
from pipeline.io.geotiff_reads import zero_invalid

MAX_FIT_PIXELS = 2_000_000  # per channel: a deterministic subsample keeps the fit's memory bounded


@dataclass
class ClipCounts:
    """Valid pixels per channel below ``low``, above ``high``, and in all."""

    below: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    above: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    total: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def add(self, other: ClipCounts) -> None:
        if other.total.size == 0:
            return
        if self.total.size == 0:
            self.below, self.above, self.total = (np.zeros_like(other.total) for _ in range(3))
        self.below, self.above, self.total = self.below + other.below, self.above + other.above, \
            self.total + other.total

    def fractions(self, names: Sequence[str]) -> dict[str, dict[str, float]]:
        total = np.maximum(self.total, 1)
        return {name: {"low": round(float(b / t), 6), "high": round(float(a / t), 6)}
                for name, b, a, t in zip(names, self.below, self.above, total)}


class UnitRange(NamedTuple):
    """One value-range group's fitted (low, high) per channel."""

    low: np.ndarray
    high: np.ndarray


def configured_range(value_range: Sequence | None, channels: int, key: str,
                     where: object) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) per channel from ``value_range`` (one pair, or one per channel), or None when unset.

    Raises:
        UnreadableImageError: a per-channel list whose length is not the channel count (names the key).
    """
    pairs = range_pairs(value_range, channels)
    if pairs is None:
        return None
    if len(pairs) != channels:
        raise UnreadableImageError(f"{where}: {key} gives {len(pairs)} ranges for {channels} channels")
    return np.array([p[0] for p in pairs], np.float64), np.array([p[1] for p in pairs], np.float64)


def range_pairs(value_range: Sequence | None, channels: int) -> list[tuple[float, float]] | None:
    """``value_range`` as one (low, high) per channel: a single pair is repeated; None stays None."""
    if value_range is None:
        return None
    if len(value_range) == 2 and all(isinstance(v, int | float) for v in value_range):
        return [(float(value_range[0]), float(value_range[1]))] * channels
    return [(float(low), float(high)) for low, high in value_range]


def to_unit(data: np.ndarray, valid: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(C, H, W) physical values → (x − low) / (high − low) per channel, clipped to [0, 1], 0.0 where invalid."""
    low, high = np.asarray(low, np.float32)[:, None, None], np.asarray(high, np.float32)[:, None, None]
    if np.all(low == 0) and np.all(high == 1):  # exact, one pass: reflectance products
        unit = np.clip(data, 0.0, 1.0).astype(np.float32, copy=False)
    else:
        unit = np.subtract(data, low, dtype=np.float32)  # the cast and the subtraction in one pass
        unit /= high - low
        np.clip(unit, 0.0, 1.0, out=unit)
    zero_invalid(unit, valid)
    return unit


def clip_counts(data: np.ndarray, valid: np.ndarray, low: np.ndarray, high: np.ndarray) -> ClipCounts:
    """Valid pixels of one (C, H, W) chip below ``low`` / above ``high``, per channel.

    Compared in the chip's own float32 against the nearest float32 bounds on the inside (the same answer as
    comparing in float64, 8x faster than gathering the valid pixels: this runs once per chip of a range group).
    """
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    if data.dtype == np.float32:
        low, high = _float32_at_least(low), _float32_at_most(high)
    below = np.count_nonzero((data < low[:, None, None]) & valid, axis=(1, 2))
    above = np.count_nonzero((data > high[:, None, None]) & valid, axis=(1, 2))
    return ClipCounts(below=below.astype(np.int64), above=above.astype(np.int64),
                      total=np.full(data.shape[0], np.count_nonzero(valid), np.int64))


def _float32_at_least(values: np.ndarray) -> np.ndarray:
    """The smallest float32 ≥ each value: for float32 x, x < v exactly when x < this."""
    rounded = values.astype(np.float32)
    return np.where(rounded < values, np.nextafter(rounded, np.float32(np.inf)), rounded)


def _float32_at_most(values: np.ndarray) -> np.ndarray:
    """The largest float32 ≤ each value: for float32 x, x > v exactly when x > this."""
    rounded = values.astype(np.float32)
    return np.where(rounded > values, np.nextafter(rounded, np.float32(-np.inf)), rounded)


def fit_range(images: Sequence[np.ndarray], valid: Sequence[np.ndarray],
              percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's ``percentiles`` over the valid pixels of ``images`` (the train split's chips).

    A channel whose two percentiles coincide (a constant band) gets ``high = low + 1`` so it maps to 0, not NaN.
    """
    total = sum(int(np.count_nonzero(mask)) for mask in valid)
    if total == 0:
        raise ValueError("no valid training pixels to fit the value range from")
    step = total // MAX_FIT_PIXELS + 1  # the same regular subsample of every chip: memory bounded as it is taken
    # .copy(): a strided view would keep each chip's whole (C, p) pixel copy alive until the concatenation
    per_channel = np.concatenate([valid_pixels(image, mask)[:, ::step].copy()
                                  for image, mask in zip(images, valid)], axis=1)
    low, high = np.percentile(per_channel.astype(np.float64), percentiles, axis=1)
    return low, np.where(high > low, high, low + 1.0)
