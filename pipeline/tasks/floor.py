"""The trivial floor: a linear model on per-channel intensity statistics (docs/background.md §2.4).

If a pretrained network cannot beat mean/std/percentiles of each window or band, it has learned
nothing about shape or texture; on EuroSAT this floor already rivals ImageNet features.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.chips import ChipSet

FLOOR_PERCENTILES = (5, 50, 95)


def image_statistics(chips: ChipSet, indices: np.ndarray) -> np.ndarray:
    """(len(indices), C · 5) features: per-channel mean, std and 5/50/95 percentiles of valid pixels."""
    rows = []
    for index in indices:
        image = np.asarray(chips.images[index], dtype=np.float32)  # (C, S, S)
        valid = np.asarray(chips.valid[index])
        pixels = image[:, valid] if valid.any() else image.reshape(image.shape[0], -1)
        rows.append(
            np.concatenate(
                [pixels.mean(axis=1), pixels.std(axis=1), *np.percentile(pixels, FLOOR_PERCENTILES, axis=1)]
            )
        )
    return np.asarray(rows, dtype=np.float32)
