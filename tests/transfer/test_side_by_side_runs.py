"""A stage's runs side by side in forked processes give exactly the results of the same runs one after another."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from pipeline.config import EvaluateConfig, FinetuneConfig
from pipeline.models.backbone import create_backbone
from pipeline.runtime import Compute, auto_side_by_side, side_by_side_runs
from pipeline.side_by_side import RunFailed, map_side_by_side
from pipeline.transfer.classification import evaluate_classification
from pipeline.transfer.linear import LinearProbes
from pipeline.transfer.protocol import TaskScoring, run_protocols, seed_runs
from tests.transfer.test_transfer_protocol import _chips


def test_results_come_back_in_input_order_from_forked_workers():
    parent = os.getpid()
    out = map_side_by_side(lambda x: (x * x, os.getpid()), list(range(7)), workers=3)
    assert [value for value, _ in out] == [x * x for x in range(7)]
    assert all(pid != parent for _, pid in out) and len({pid for _, pid in out}) > 1


def test_one_worker_or_one_item_runs_here_without_the_worker_setup():
    called = []
    assert map_side_by_side(lambda x: os.getpid(), [1, 2], workers=1, worker_setup=lambda: called.append(1)) == \
        [os.getpid()] * 2
    assert map_side_by_side(lambda x: os.getpid(), [1], workers=4) == [os.getpid()] and not called


def test_the_worker_setup_runs_in_each_worker_before_its_runs():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # what the workers inherit, unless their setup changes it
    try:
        out = map_side_by_side(lambda x: torch.get_num_threads(), [0, 1, 2], workers=2,
                               worker_setup=lambda: torch.set_num_threads(1))
    finally:
        torch.set_num_threads(threads)
    assert out == [1, 1, 1]


def test_a_runs_exception_reaches_the_parent_as_itself():
    def run(x):
        if x == 2:
            raise ValueError("chip 2 is broken")
        return x

    with pytest.raises(ValueError, match="chip 2 is broken"):
        map_side_by_side(run, [0, 1, 2, 3], workers=2)


def test_a_worker_that_dies_is_reported_with_its_exit_code():
    def run(x):
        if x == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    with pytest.raises(RunFailed, match="exit code -9"):
        map_side_by_side(run, [0, 1, 2], workers=2)


def test_auto_picks_the_fewest_workers_with_the_shortest_estimated_wall_time():
    assert auto_side_by_side(3, 2) == 3  # time-sliced: 1.5 run-lengths instead of 2
    assert auto_side_by_side(9, 2) == 3
    assert auto_side_by_side(4, 2) == 2
    assert auto_side_by_side(5, 1) == 1 and auto_side_by_side(1, 8) == 1
    assert auto_side_by_side(100, 64) == 8  # the cap


def test_a_gpu_runs_one_at_a_time_and_says_so_when_asked_for_more():
    assert side_by_side_runs(torch.device("cuda"), 0, 0)["parallel_runs"] == 1
    with pytest.raises(ValueError, match="runtime.parallel_runs"):
        side_by_side_runs(torch.device("cuda"), 2, 0)
    assert side_by_side_runs(torch.device("cpu"), 0, 0)["threads_per_run"] == 1


def test_auto_runs_here_at_one_thread_and_restores_the_stages_threads():
    torch.set_num_threads(2)
    compute = Compute(parallel_runs=0, threads_per_run=1, cores=1)  # one core: auto runs them here
    assert compute.map_runs(lambda x: (torch.get_num_threads(), os.getpid()), [0, 1]) == [(1, os.getpid())] * 2
    assert torch.get_num_threads() == 2


def test_the_protocols_record_does_not_depend_on_how_runs_are_mapped():
    labels = np.repeat([0, 1], 10)
    scoring = TaskScoring("cls", metrics=lambda p: {"mean": float(p.mean()), "first": float(p[0])},
                          stored=lambda p: p.tolist(), metric_names=("mean",))

    def fit_predict(fraction, seed, subset):
        return np.random.default_rng([seed, len(subset)]).uniform(size=4), {"steps": len(subset)}

    def record(map_runs):
        runs = seed_runs([0, 1, 2], lambda f, s: np.flatnonzero(labels >= 0)[: max(1, int(20 * f))], fit_predict,
                         scoring, map_runs=map_runs)
        done = run_protocols({"finetune": 0.1, "finetune_10pct": 0.1, "finetune_100pct": 1.0}, runs)
        return {name: (r.runs, r.outputs) for name, r in done.items()}

    side_by_side = record(lambda run, items: map_side_by_side(run, items, workers=2))
    assert side_by_side == record(lambda run, items: [run(item) for item in items])
    assert side_by_side["finetune"] == side_by_side["finetune_10pct"]


def test_one_linear_probe_per_distinct_subset(monkeypatch):
    from pipeline.transfer import linear

    chips, fits = _chips(), []
    original = linear.fit_linear_probe
    monkeypatch.setattr(linear, "fit_linear_probe", lambda *a, **k: fits.append(1) or original(*a, **k))
    train = chips.indices("train")
    probes = LinearProbes(chips, train, np.random.default_rng(0).normal(size=(len(train), 5)), EvaluateConfig())
    whole = [probes(1.0, seed)[1] for seed in range(4)]  # 100 %: every seed draws every chip
    assert len(fits) == 1 and all(probe is whole[0] for probe in whole)
    probes(0.5, 0), probes(0.5, 1)
    assert len(fits) == 3


def test_fine_tunes_side_by_side_equal_the_same_fine_tunes_one_after_another():
    """The stage's guarantee: a run's metrics depend on its thread count only (here 1), not on the workers."""
    chips = _chips()
    cfg = EvaluateConfig(label_fraction=0.5, label_fractions=[0.5, 1.0], transfer_sweep=["finetune"], seeds=[0, 1],
                         linear_seed_count=2, finetune=FinetuneConfig(steps=3, batch_size=8, max_validations=1))

    def evaluate(compute):
        return evaluate_classification(lambda: create_backbone("tf_efficientnet_lite0", "random", 3, seed=0)[0],
                                       chips, cfg, "remote_multispectral", {}, compute=compute)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_after_another = evaluate(Compute())
        side_by_side = evaluate(Compute(parallel_runs=2, threads_per_run=1))
    finally:
        torch.set_num_threads(threads)
    for key in ("per_seed", "summary", "test_outputs", "confusion"):
        assert side_by_side[key] == one_after_another[key], key
