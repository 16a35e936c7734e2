"""Label-efficiency subsets (stratified and nested, so 1 % ⊂ 10 % ⊂ 100 % for one seed), the batches a
fine-tune draws from one, and the validation chips it is scored on."""

from __future__ import annotations

import math
from collections.abc import Iterator

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
        # unlabelled chips (-1: e.g. a segmentation set with masks only) are one more stratum; seeds must be ≥ 0
        order = np.random.default_rng([seed, int(class_index) % 2**32]).permutation(members)
        chosen.append(order[: max(1, math.ceil(fraction * len(members)))])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def epoch_batches(rng: np.random.Generator, n: int, batch_size: int) -> Iterator[np.ndarray]:
    """Positions of successive batches walking through a fresh permutation of ``n`` items per epoch (every item
    once per epoch; a batch may span two epochs). Never a batch of one: BatchNorm in training mode cannot
    normalise a single item, and a 1 % subset of a small split can hold one chip."""
    if n < 1:
        raise ValueError("cannot draw training batches from an empty subset")
    size = max(2, min(batch_size, n))
    stream = np.zeros(0, dtype=np.int64)
    while True:
        while len(stream) < size:
            stream = np.concatenate([stream, rng.permutation(n) if n > 1 else np.zeros(2, dtype=np.int64)])
        yield stream[:size]
        stream = stream[size:]


def validation_subset(indices: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """The validation chips scored during training: all of them, or a fixed random ``limit`` of them."""
    if len(indices) <= limit:
        return indices
    return np.sort(np.random.default_rng([seed, 17]).choice(indices, limit, replace=False))
