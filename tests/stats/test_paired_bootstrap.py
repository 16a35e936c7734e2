"""The paired, grouped bootstrap: its intervals cover a known true difference at the stated rate, its verdicts
appear at the expected rates, and Holm's adjustment matches the textbook procedure."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.stats.paired_bootstrap import group_weights, holm_adjusted, paired_difference


def _weighted_mean(values):
    return lambda weights: weights @ values / weights.sum(axis=1)


def _simulated_study(rng, true_difference, groups=25, per_group=6, seeds=3, group_sd=0.08, seed_sd=0.02):
    """Paired runs of two methods on one grouped test set: per-unit scores whose A − B difference has a
    group-level part (some patients favour A), unit noise and a per-seed offset, around ``true_difference``."""
    group_of_unit = np.repeat(np.arange(groups), per_group)
    base = rng.normal(0.7, 0.1, groups)[group_of_unit] + rng.normal(0, 0.05, len(group_of_unit))
    effect = true_difference + rng.normal(0, group_sd, groups)[group_of_unit] + rng.normal(0, 0.05,
                                                                                          len(group_of_unit))
    runs_a, runs_b = [], []
    for _ in range(seeds):
        runs_b.append(_weighted_mean(base + rng.normal(0, 0.02, len(base))))
        runs_a.append(_weighted_mean(base + effect + rng.normal(0, seed_sd) + rng.normal(0, 0.02, len(base))))
    return runs_a, runs_b, [f"patient{g}" for g in group_of_unit]


REGIMES = {  # (group sd of the difference, seed sd, seeds)
    "test set dominates, 3 seeds": (0.08, 0.02, 3),
    "seeds dominate, 3 seeds": (0.02, 0.04, 3),
    "seeds dominate, 10 seeds": (0.02, 0.04, 10),
}


def _repeat_study(true_difference, regime, repetitions=300):
    group_sd, seed_sd, seeds = REGIMES[regime]
    rng = np.random.default_rng(7)
    covered = better = 0
    for repetition in range(repetitions):
        runs_a, runs_b, groups = _simulated_study(rng, true_difference, group_sd=group_sd, seed_sd=seed_sd,
                                                  seeds=seeds)
        result = paired_difference(runs_a, runs_b, groups, seed=repetition, resamples=400)
        covered += result.low <= true_difference <= result.high
        better += result.low > 0
    return covered / repetitions, better / repetitions


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("true_difference", [0.0, 0.05])
def test_interval_covers_the_true_difference_at_least_93_percent_of_the_time(true_difference, regime):
    coverage, better = _repeat_study(true_difference, regime)
    assert coverage >= 0.93
    if true_difference == 0:
        assert better <= 0.05  # a false "better": at most the one-sided 2.5 % plus simulation noise


def test_a_real_difference_is_called_better_at_the_expected_rate():
    """0.05 is ~3.5 standard errors of the 10-seed mean difference: found in most studies."""
    assert _repeat_study(0.05, "seeds dominate, 10 seeds")[1] >= 0.85


def test_observed_difference_is_the_mean_of_the_per_seed_differences_on_the_whole_test_set():
    values_a, values_b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 1.0, 1.0])
    result = paired_difference([_weighted_mean(values_a), _weighted_mean(values_a + 1)],
                               [_weighted_mean(values_b), _weighted_mean(values_b)], ["a", "a", "b", "b"], seed=0)
    assert result.delta == pytest.approx(((2.5 - 0.75) + (3.5 - 0.75)) / 2)
    assert (result.seeds, result.groups) == (2, 2)


def test_units_of_one_group_are_drawn_together():
    groups = ["p1", "p1", "p2", "p3", "p3", "p3"]
    weights = group_weights(groups, 50, np.random.default_rng(0))
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 3] == weights[:, 5]).all()
    assert (weights[:, [0, 2, 3]].sum(axis=1) == 3).all()  # three groups drawn per resample


def test_mismatched_seeds_are_refused():
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([_weighted_mean(np.ones(2))], [], ["a", "b"], seed=0)


def test_holm_matches_the_textbook_step_down():
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    order = sorted(range(4), key=lambda i: p[i])
    expected, running = {}, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (4 - rank) * p[index]))
        expected[index] = running
    adjusted = holm_adjusted(p)
    assert adjusted[:4] == pytest.approx([expected[i] for i in range(4)])
    assert np.isnan(adjusted[4])
    assert adjusted[3] == pytest.approx(0.02) and adjusted[1] == pytest.approx(0.06)
