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
