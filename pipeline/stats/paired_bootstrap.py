"""Paired differences between two initialisations, with an interval that knows where the noise comes from.

Two initialisations evaluated with the same seed share that seed's label subset, and every run shares one test
set: the comparison is paired, and the per-seed difference is the unit of evidence. Its uncertainty has two
sources, and both enter the interval:

* **the test set is a sample** of patients / spatial blocks: each resample draws test *groups* with replacement
  (chips of one patient are not independent evidence), and every seed's difference is recomputed on it;
* **the seeds are a sample** of label subsets and training runs: on the whole test set the per-seed differences
  scatter by seed alone, so each resample adds their standard error times a Student-t draw (S − 1 degrees of
  freedom). Resampling 3 seeds instead understates that part (coverage 0.84 where seeds dominate); with one
  seed there is no seed part and the interval covers the test set's variance only.

``scipy.stats.bootstrap`` resamples one sample per call and knows no seed level; a grouped resample of a metric
that is not a mean of per-unit values (AUROC, mIoU, mAP) plus the seed term does not fit it, hence this small
vectorised version. The
interval is the percentile interval of the resampled mean difference; the p-value for multiple-comparison control
is two-sided from the bootstrap standard error (a normal approximation, so Holm's small thresholds are resolved
without millions of resamples). ``tests/stats/test_paired_bootstrap.py`` checks coverage by simulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from pipeline.stats.resampled_metrics import mean_of_defined

Scorer = Callable[[np.ndarray], np.ndarray]  # (B, N) unit weights → (B,) metric values
RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """Mean over paired seeds of metric(A) − metric(B) on the whole test set, its interval and p-value."""

    delta: float
    low: float
    high: float
    p_value: float
    seeds: int
    groups: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def group_weights(groups: Sequence, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, N) unit weights: how often each unit's group was drawn when drawing as many groups as there
    are, with replacement."""
    _, group_of_unit = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    n_groups = int(group_of_unit.max()) + 1
    drawn = rng.integers(0, n_groups, size=(resamples, n_groups))
    counts = np.zeros((resamples, n_groups))
    np.add.at(counts, (np.arange(resamples)[:, None], drawn), 1.0)
    return counts[:, group_of_unit]


def paired_difference(scorers_a: Sequence[Scorer], scorers_b: Sequence[Scorer], groups: Sequence,
                      seed: int, resamples: int = RESAMPLES, level: float = LEVEL) -> PairedDifference:
    """Difference of A over B, where ``scorers_a[s]`` and ``scorers_b[s]`` are the same seed's runs.

    Each scorer maps unit weights (B, N) to metric values (B,); all share the test units behind ``groups``.
    """
    if len(scorers_a) != len(scorers_b) or not scorers_a:
        raise ValueError(f"paired_difference needs the same seeds on both sides; got {len(scorers_a)} and "
                         f"{len(scorers_b)} runs")
    rng = np.random.default_rng(seed)
    units = len(np.asarray(groups))
    weights = group_weights(groups, resamples, rng)
    whole = np.ones((1, units))
    observed = np.array([a(whole)[0] - b(whole)[0] for a, b in zip(scorers_a, scorers_b)])  # (S,)
    per_seed = np.stack([a(weights) - b(weights) for a, b in zip(scorers_a, scorers_b)], axis=1)  # (B, S)
    draws = _with_seed_variation(per_seed, observed, rng)
    draws = draws[np.isfinite(draws)]
    finite = observed[np.isfinite(observed)]
    delta = float(finite.mean()) if len(finite) else math.nan
    if len(draws) < 2 or not math.isfinite(delta):
        return PairedDifference(delta, math.nan, math.nan, math.nan, len(observed), _count(groups))
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    spread = float(draws.std(ddof=1))
    p_value = 1.0 if spread == 0 and delta == 0 else float(2 * stats.norm.sf(abs(delta) / spread)) if spread else 0.0
    return PairedDifference(delta, float(low), float(high), p_value, len(observed), _count(groups))


def _with_seed_variation(per_seed: np.ndarray, observed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(B,) each test resample's mean over seeds plus a draw of the seed mean's own error: the per-seed
    differences on the whole test set scatter only by seed, so their standard error times a Student-t draw
    with S − 1 degrees of freedom (resampling 3 seeds would understate it: 84 % coverage in the simulation)."""
    mean = mean_of_defined(per_seed)
    finite = observed[np.isfinite(observed)]
    if len(finite) < 2:
        return mean
    standard_error = finite.std(ddof=1) / math.sqrt(len(finite))
    return mean + standard_error * rng.standard_t(len(finite) - 1, size=len(mean))


def _count(groups: Sequence) -> int:
    return len(np.unique(np.asarray(groups, dtype=str)))


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted): the family-wise error over all
    of them is at most α when each adjusted value is compared with α."""
    p = np.asarray(p_values, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="mergesort")]
    adjusted = np.full(len(p), np.nan)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()
