"""Every comparison the report makes, as paired differences with grouped-bootstrap intervals and one verdict each.

SimCLR is compared with ImageNet init, random init and the trivial floor, per domain, task and protocol (label
fraction), on the runs of the seeds both sides share (the same label subset, the same test set). The verdicts of
one report are one family: Holm's step-down procedure holds the chance of any false "better" / "worse" among
them to 5 %. Nothing here trains or reads a model; it reads the per-run test outputs the stages stored.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from pipeline.protocols import PRIMARY_METRIC, fraction_of, partner_protocol
from pipeline.side_by_side import map_side_by_side
from pipeline.stats.paired_bootstrap import PairedDifference, Scorer, holm_adjusted, paired_difference
from pipeline.stats.resampled_metrics import weighted_auroc, weighted_map, weighted_miou

ALPHA = 0.05
COMPARED_WITH = ("imagenet", "random", "floor")
OTHER_NAMES = {"imagenet": "ImageNet init", "random": "random init", "floor": "the trivial floor"}
RESAMPLE_CHUNK = 250
VERDICT_WORDS = {"better": "better", "worse": "worse", "none": "no detectable difference", "n/a": "not comparable"}


@dataclass(frozen=True)
class Comparison:
    """SimCLR − ``other`` on one domain / task / protocol; ``adjusted_p`` is Holm's over the report."""

    domain: str
    task: str
    protocol: str
    fraction: float
    other: str
    difference: PairedDifference
    adjusted_p: float = math.nan

    @property
    def metric(self) -> str:
        return PRIMARY_METRIC[self.task]

    @property
    def verdict(self) -> str:
        """``better`` / ``worse`` (Holm-adjusted p < α), ``none`` (no detectable difference), ``n/a``."""
        if not math.isfinite(self.adjusted_p):
            return "n/a"
        if self.adjusted_p >= ALPHA:
            return "none"
        return "better" if self.difference.delta > 0 else "worse"

    def cell(self) -> str:
        """``+0.031 [+0.012, +0.050]``: the mean paired difference and its 95 % interval."""
        d = self.difference
        if not math.isfinite(d.low):
            return f"{d.delta:+.3f} [–]" if math.isfinite(d.delta) else "–"
        return f"{d.delta:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"

    def as_record(self) -> dict:
        d = self.difference
        return {"domain": self.domain, "task": self.task, "protocol": self.protocol, "fraction": self.fraction,
                "simclr_vs": self.other, "metric": self.metric, "delta": _round(d.delta), "low": _round(d.low),
                "high": _round(d.high), "p": _round(d.p_value), "holm_p": _round(self.adjusted_p),
                "verdict": VERDICT_WORDS[self.verdict], "seeds": d.seeds, "test_groups": d.groups}


def _round(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


# task → (the primary metric on weighted resamples, the arguments it takes from a result and one run's outputs)
RESAMPLED_METRIC = {
    "cls": (weighted_auroc, lambda result, proba: (np.asarray(result["test_units"]["labels"]), np.asarray(proba))),
    "seg": (weighted_miou, lambda result, counts: (np.asarray(counts),)),
    "det": (weighted_map, lambda result, matches: (matches,)),
}


def run_scorers(task: str, result: dict, protocol: str) -> dict[int, Scorer]:
    """seed → the run's primary metric on weighted resamples of the test set (from its stored test outputs)."""
    runs, outputs = result["per_seed"].get(protocol, []), result.get("test_outputs", {}).get(protocol, [])
    if len(runs) != len(outputs):
        return {}
    metric, arguments = RESAMPLED_METRIC[task]
    return {run["seed"]: _bind(metric, *arguments(result, output)) for run, output in zip(runs, outputs)}


def _bind(function, *arguments) -> Scorer:
    """A scorer that evaluates ``RESAMPLE_CHUNK`` weight rows at a time: a detection run with 50,000 test boxes would
    otherwise hold (2,000 × 50,000) float64 cumulative sums, ~0.8 GB each."""
    def score(weights: np.ndarray) -> np.ndarray:
        return np.concatenate([function(*arguments, weights[start:start + RESAMPLE_CHUNK])
                               for start in range(0, len(weights), RESAMPLE_CHUNK)])
    return score


def compare_runs(domain: str, task: str, protocol: str, simclr: dict, other_name: str, other: dict,
                 seed: int) -> Comparison | None:
    """SimCLR's runs of ``protocol`` against ``other``'s partner protocol, paired by seed; None when they share
    no seed or no stored test outputs."""
    mine = run_scorers(task, simclr, protocol)
    theirs = run_scorers(task, other, partner_protocol(task, protocol, other_name))
    seeds = sorted(set(mine) & set(theirs))
    groups = simclr.get("test_units", {}).get("groups")
    if not seeds or groups is None or other.get("test_units", {}).get("groups") != groups:
        return None
    stream = seed + zlib.crc32(f"{domain}/{task}/{protocol}/{other_name}".encode())
    difference = paired_difference([mine[s] for s in seeds], [theirs[s] for s in seeds], groups, seed=stream)
    return Comparison(domain, task, protocol, fraction_of(protocol, simclr), other_name, difference)


def compare_all(results: dict[str, dict[str, dict[str, dict]]], seed: int, workers: int = 1) -> list[Comparison]:
    """domain → task → init → result: every SimCLR comparison, one per distinct label fraction of a protocol
    kind, with Holm-adjusted p-values over all of them. The bootstraps (most of the report's time) run
    ``workers`` side by side; each draws from its own stream, so the result does not depend on ``workers``."""
    planned = [(domain, task, protocol, by_init["simclr"], other, by_init[other], seed)
               for domain, tasks in results.items() for task, by_init in tasks.items() if "simclr" in by_init
               for protocol in _distinct_protocols(by_init["simclr"]) for other in COMPARED_WITH if other in by_init]
    found = [c for c in map_side_by_side(lambda arguments: compare_runs(*arguments), planned, workers) if c]
    adjusted = holm_adjusted([c.difference.p_value for c in found])
    return [replace(c, adjusted_p=p) for c, p in zip(found, adjusted)]


def _distinct_protocols(result: dict) -> list[str]:
    """The protocols of a result, one per (kind, label fraction): the headline ``linear`` is the same runs as
    ``linear_10pct`` when 10 % is also on the sweep, and a family must not count a comparison twice."""
    seen, kept = set(), []
    for protocol in sorted(result["per_seed"], key=lambda p: ("_" in p, p)):  # headline names first
        key = (protocol.split("_")[0], fraction_of(protocol, result))
        if key not in seen:
            seen.add(key)
            kept.append(protocol)
    return kept


def find(comparisons: Iterable[Comparison], domain: str, task: str, kind: str, fraction: float,
         other: str) -> Comparison | None:
    """The comparison of one protocol kind (``linear``, ``finetune``) at one label fraction, by whatever name."""
    return next((c for c in comparisons if (c.domain, c.task, c.other) == (domain, task, other)
                 and c.protocol.split("_")[0] == kind and math.isclose(c.fraction, fraction)), None)


def family_note(comparisons: list[Comparison]) -> str:
    """How the verdicts were reached, for the report's method line."""
    return (f"Δ = SimCLR − other, mean over the seeds both ran (same label subsets, same test set); 95 % interval from "
            f"a bootstrap that resamples test groups (patients / spatial blocks) and adds the seeds' own error; "
            f"better / worse when Holm's adjusted p < {ALPHA:g} over all {len(comparisons)} comparisons in this report.")
