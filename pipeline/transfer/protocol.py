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


def run_protocols(protocols: dict[str, float], run_fraction: Callable[[float], FractionRuns]) -> dict[str, FractionRuns]:
    """``run_fraction`` once per distinct fraction (runs are deterministic, so the headline is not re-run)."""
    done: dict[float, FractionRuns] = {}
    for fraction in protocols.values():
        if fraction not in done:
            done[fraction] = run_fraction(fraction)
    return {protocol: done[fraction] for protocol, fraction in protocols.items()}


def seed_runs(seeds: list[int], subset_of: Callable[[float, int], np.ndarray],
              fit_predict: Callable[[float, int, np.ndarray], tuple[object, dict | None]], scoring: TaskScoring,
              describe: Callable[[np.ndarray], dict] = lambda subset: {}, label: str = ""
              ) -> Callable[[float], FractionRuns]:
    """The runs of one label fraction: per seed, its subset (``subset_of(fraction, seed)``, chip indexes) →
    ``fit_predict(fraction, seed, subset)`` (raw test predictions and the training record, None where nothing
    trains) → scored."""

    def at(fraction: float) -> FractionRuns:
        done = FractionRuns()
        for seed in seeds:
            subset = subset_of(fraction, seed)
            predicted, record = fit_predict(fraction, seed, subset)
            metrics = scoring.metrics(predicted)
            done.runs.append({"seed": seed, "n_labels": len(subset), **describe(subset), **metrics,
                              **({"training": record} if record else {})})
            done.outputs.append(scoring.stored(predicted))
            if scoring.accumulate is not None:
                total = scoring.accumulate(predicted)
                done.total = total if done.total is None else done.total + total
            done.first = predicted if done.first is None else done.first
            log.info("%s %s %g%% labels, seed %d: %s", scoring.name, label, fraction * 100, seed,
                     ", ".join(f"{name} {metrics[name]:.3f}" for name in list(metrics)[:2]))
        return done

    return at


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
