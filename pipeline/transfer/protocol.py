"""The seeds × label-fractions protocol every task and floor shares, and the result record it writes.

torch-free: the floors run it without torch. Every seed draws its own stratified label subset of the task's
training chips (the same :func:`label_subset` draw for every task and initialisation), fits, predicts the fixed
test split once, and is scored; the record keeps per-seed metrics, their summaries and, aligned with
``per_seed``, each run's per-chip test outputs for the report's paired bootstrap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.config import EvaluateConfig, TransferTraining
from pipeline.data.chips import ChipSet
from pipeline.data.subsets import label_subset
from pipeline.metrics import summarise_runs
from pipeline.protocols import fraction_key

log = logging.getLogger(__name__)


@dataclass
class FractionRuns:
    """What one label fraction's seeds produced: the per-seed records, each run's stored test outputs, the
    first seed's raw test predictions (drawn in the report) and the sum of ``accumulate`` over seeds."""

    runs: list[dict] = field(default_factory=list)
    outputs: list = field(default_factory=list)
    first: object = None
    total: object = None


@dataclass(frozen=True)
class TaskScoring:
    """How a task turns raw test predictions into a run's metrics and its stored outputs."""

    name: str  # cls / seg / det: the result's ``task``
    metrics: Callable[[object], dict]
    stored: Callable[[object], object]  # per-chip outputs the bootstrap recomputes the metric from
    metric_names: tuple[str, ...] | None = None  # summarised names; None = the classification metrics
    accumulate: Callable[[object], np.ndarray] | None = None  # summed over seeds (a confusion matrix)


def transfer_protocols(cfg: EvaluateConfig, task: str, family: str = "finetune") -> dict[str, float]:
    """Protocol → label fraction: ``family`` at the headline fraction and, when ``task`` is in
    ``evaluate.transfer_sweep`` (always for the cheap linear probe), ``<family>_<p>pct`` per
    ``evaluate.label_fractions``."""
    protocols = {family: cfg.label_fraction}
    if family == "linear" or task in cfg.transfer_sweep:
        protocols.update({fraction_key(family, fraction): fraction for fraction in cfg.label_fractions})
    return protocols


RunMapper = Callable[[Callable, list], list]  # ``map(run, items)`` in order, perhaps side by side


def serial_runs(run: Callable, items: list) -> list:
    return [run(item) for item in items]


def run_protocols(protocols: dict[str, float],
                  run_fractions: Callable[[list[float]], dict[float, FractionRuns]]) -> dict[str, FractionRuns]:
    """Each distinct fraction runs once (runs are deterministic, so the headline is not re-run), all of them in
    one ``run_fractions`` call so that their runs can go side by side."""
    done = run_fractions(list(dict.fromkeys(protocols.values())))
    return {protocol: done[fraction] for protocol, fraction in protocols.items()}


def seed_runs(seeds: list[int], subset_of: Callable[[float, int], np.ndarray],
              fit_predict: Callable[[float, int, np.ndarray], tuple[object, dict | None]], scoring: TaskScoring,
              describe: Callable[[np.ndarray], dict] = lambda subset: {}, label: str = "",
              map_runs: RunMapper = serial_runs) -> Callable[[list[float]], dict[float, FractionRuns]]:
    """The runs of the given label fractions: per fraction and seed, its subset (``subset_of(fraction, seed)``,
    chip indexes, drawn here) → ``fit_predict(fraction, seed, subset)`` (raw test predictions and the training
    record, None where nothing trains; through ``map_runs``, so perhaps in another process) → scored here."""

    def at(fractions: list[float]) -> dict[float, FractionRuns]:
        plan = [(fraction, seed, subset_of(fraction, seed)) for fraction in fractions for seed in seeds]
        longest_first = sorted(range(len(plan)), key=lambda i: -len(plan[i][2]))  # side by side, none starts last
        outcomes = dict(zip(longest_first, map_runs(lambda run: fit_predict(*run), [plan[i] for i in longest_first])))
        outcomes = [outcomes[i] for i in range(len(plan))]
        done = {fraction: FractionRuns() for fraction in fractions}
        for (fraction, seed, subset), (predicted, record) in zip(plan, outcomes):
            metrics = add_run(done[fraction], scoring, predicted,
                              {"seed": seed, "n_labels": len(subset), **describe(subset)}, record)
            log.info("%s %s %g%% labels, seed %d: %s", scoring.name, label, fraction * 100, seed,
                     ", ".join(f"{name} {metrics[name]:.3f}" for name in list(metrics)[:2]))
        return done

    return at


def add_run(runs: FractionRuns, scoring: TaskScoring, predicted: object, identity: dict, record: dict | None) -> dict:
    """Score one run's raw test predictions and append it (the first run's predictions are kept raw); returns
    its metrics."""
    metrics = scoring.metrics(predicted)
    runs.runs.append({**identity, **metrics, **({"training": record} if record else {})})
    runs.outputs.append(scoring.stored(predicted))
    if scoring.accumulate is not None:
        total = scoring.accumulate(predicted)
        runs.total = total if runs.total is None else runs.total + total
    runs.first = predicted if runs.first is None else runs.first
    return metrics


def stratified_subsets(chips: ChipSet, train: np.ndarray) -> Callable[[float, int], np.ndarray]:
    """``(fraction, seed)`` → chip indexes of the seed's stratified subset of ``train`` (by the chip labels)."""
    return lambda fraction, seed: train[label_subset(chips.labels[train], fraction, seed)]


def task_result(scoring: TaskScoring, cfg: EvaluateConfig, seeds: list[int], units: dict,
                done: dict[str, FractionRuns], extra: dict) -> dict:
    """The result file of one task and initialisation (or floor)."""
    return {
        "task": scoring.name,
        "label_fraction": cfg.label_fraction,
        "label_fractions": list(cfg.label_fractions),
        "seeds": list(seeds),
        "n_test": len(units["groups"]),
        "per_seed": {protocol: runs.runs for protocol, runs in done.items()},
        "summary": {protocol: summarise_runs(runs.runs, scoring.metric_names) for protocol, runs in done.items()},
        "test_units": units,
        "test_outputs": {protocol: runs.outputs for protocol, runs in done.items()},
        **extra,
    }


def test_units(chips: ChipSet, test: np.ndarray, labelled: bool = True) -> dict:
    """Who the test units are, for a bootstrap that resamples them by group (patient / spatial block); a chip
    without a group (a cache written by hand) is its own group."""
    return {"groups": [chips.manifest[int(i)].get("group") or f"chip{int(i)}" for i in test],
            **({"labels": chips.labels[test].tolist()} if labelled else {})}


def training_budget(cfg: TransferTraining, key: str) -> dict:
    """What the report states about a transfer task's training: its schedule settings and their params key."""
    fields = ("epochs", "min_steps", "steps", "batch_size", "image_size", "lr", "patience")
    return {"key": key, **{name: getattr(cfg, name) for name in fields}}
