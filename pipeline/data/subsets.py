"""Label-efficiency subsets: stratified and nested, so 1 % ⊂ 10 % ⊂ 100 % for one seed."""

from __future__ import annotations

import math

import numpy as np


def label_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions (into ``labels``) of a stratified ``fraction`` of the labelled items.

    Each class is shuffled once per seed and its first ``ceil(fraction · n_c)`` items are taken (at least
    one per class), so a smaller fraction is always a subset of a larger one with the same seed and the
    class balance of the full training split is kept.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    chosen = []
    for class_index in np.unique(labels):
        members = np.flatnonzero(labels == class_index)
        order = np.random.default_rng([seed, int(class_index)]).permutation(members)
        chosen.append(order[: max(1, math.ceil(fraction * len(members)))])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def draw_batch(rng: np.random.Generator, n: int, batch_size: int) -> np.ndarray:
    """Positions of one fine-tuning batch, drawn without replacement, but never a batch of one: BatchNorm in
    training mode cannot normalise a single item, and a 1 % subset of a small split can hold one chip."""
    if n >= 2:
        return rng.choice(n, size=min(batch_size, n), replace=False)
    return np.zeros(2, dtype=np.int64)
