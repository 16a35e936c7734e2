"""The report's detailed tables: per-run results read back and summarised per init and protocol.

:func:`collect_metrics` nests domain → task → init → protocol → metric (``results.json``'s ``summaries``;
label-efficiency runs are protocols too, ``linear_1pct``). Tables show mean ± 95 % Student-t half-width over
seeds, each init on its own; the paired comparisons and verdicts are :mod:`pipeline.report.comparisons`'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.atomic import read_json
from pipeline.protocols import CLASSIFICATION_METRICS, fraction_key

INIT_ORDER = ("floor", "random", "imagenet", "simclr")
PROTOCOLS = ("linear", "finetune")
HEADLINE_METRIC = "auroc"


@dataclass
class Table:
    """A rendered-format-neutral table: Markdown and HTML are drawn from the same cells."""

    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]]
    tone: list[list[str]] | None = None  # per cell "better" / "worse" / "none" / "": the HTML colours it


def read_results(evaluate_dir: Path, domains: list[str]) -> dict[str, dict[str, dict]]:
    """domain → init → the evaluate stage's JSON, for every result file present."""
    results: dict[str, dict[str, dict]] = {}
    for domain in domains:
        results[domain] = {}
        for init in INIT_ORDER:
            path = evaluate_dir / domain / f"{init}.json"
            if path.exists():
                results[domain][init] = read_json(path)
    return results


def read_segmentation_results(evaluate_dir: Path, domains: list[str], task: str = "seg") -> dict[str, dict[str, dict]]:
    """domain → init → a transfer stage's JSON (``<task>_<init>.json``: seg, det), for every file present."""
    return {domain: {init: read_json(evaluate_dir / domain / f"{task}_{init}.json") for init in INIT_ORDER
                     if (evaluate_dir / domain / f"{task}_{init}.json").exists()} for domain in domains}


def trained_result(results: dict[str, dict]) -> dict:
    """A network's result (not the floor's) of a transfer task, for the settings its section describes; the
    floor's when only the floor ran (e.g. ``grid.baseline_inits: []`` and the SimCLR stage not yet run)."""
    return next((result for init, result in results.items() if init != "floor"), next(iter(results.values())))


def collect_metrics(results: dict[str, dict[str, dict]], pretrain_dir: Path,
                    segmentation: dict[str, dict[str, dict]] | None = None,
                    detection: dict[str, dict[str, dict]] | None = None) -> dict:
    """The nested metrics file: each task's per-init, per-protocol summary, plus SimCLR's monitors."""
    metrics: dict = {}
    for domain, by_init in results.items():
        metrics[domain] = {"cls": {init: result["summary"] for init, result in by_init.items()}} if by_init else {}
        if segmentation and segmentation.get(domain):
            metrics[domain]["seg"] = {init: result["summary"] for init, result in segmentation[domain].items()}
        if detection and detection.get(domain):
            metrics[domain]["det"] = {init: result["summary"] for init, result in detection[domain].items()}
        summary = pretrain_dir / domain / "summary.json"
        if summary.exists():
            metrics[domain]["pretrain"] = read_json(summary)["metrics"]
    return metrics


def _mean_ci(summary: dict, metric: str) -> tuple[float, float]:
    return summary.get(metric, math.nan), summary.get(f"{metric}_ci95", math.nan)


def _format(mean: float, half: float) -> str:
    return "–" if math.isnan(mean) else f"{mean:.3f} ± {half:.3f}"


def _table(row_names: list[str], columns: list[tuple[str, str, str]], cls: dict) -> Table:
    """Rows = inits, columns = (title, protocol, metric); the best mean per column is marked."""
    rows, bold = [], []
    best = {}
    for _, protocol, metric in columns:
        means = [cls[i][protocol][metric] for i in row_names if protocol in cls[i] and not math.isnan(cls[i][protocol][metric])]
        best[(protocol, metric)] = max(means, default=None)
    for init in row_names:
        cells, marks = [init], [False]
        for _, protocol, metric in columns:
            mean, half = _mean_ci(cls[init].get(protocol, {}), metric)
            cells.append(_format(mean, half))
            marks.append(not math.isnan(mean) and mean == best[(protocol, metric)])
        rows.append(cells)
        bold.append(marks)
    return Table(header=["init", *[title for title, _, _ in columns]], rows=rows, bold=bold)


def classification_table(cls: dict) -> Table:
    """Headline label fraction: every metric, linear probe and fine-tuning, per init."""
    columns = [(f"{p} {m}", p, m) for p in PROTOCOLS for m in CLASSIFICATION_METRICS]
    return _table([i for i in INIT_ORDER if i in cls], columns, cls)


def segmentation_table(seg: dict, classes: list[str]) -> Table:
    """Fine-tuned segmentation per init: mIoU, mean Dice and Dice per class."""
    columns = [("mIoU", "finetune", "miou"), ("mean Dice", "finetune", "mdice"),
               *((f"Dice {name}", "finetune", f"dice_{name}") for name in classes)]
    return _table([i for i in INIT_ORDER if i in seg], columns, seg)


def detection_table(det: dict) -> Table:
    """Fine-tuned detection per init: COCO mAP at IoU 0.5 and averaged over IoU 0.5:0.95."""
    columns = [("mAP@0.5", "finetune", "map50"), ("mAP@0.5:0.95", "finetune", "map")]
    return _table([i for i in INIT_ORDER if i in det], columns, det)


def fraction_title(fraction: float) -> str:
    return f"{fraction:.0%}" if fraction >= 0.01 else f"{fraction:.1%}"


def label_efficiency_table(by_init: dict, fractions: list[float], metric: str = HEADLINE_METRIC,
                           protocol: str = "linear") -> Table:
    """``metric`` of ``protocol`` (linear, finetune) at each label fraction, per init."""
    columns = [(f"{fraction_title(fraction)} labels", fraction_key(protocol, fraction), metric) for fraction in fractions]
    return _table([i for i in INIT_ORDER if i in by_init], columns, by_init)


def label_efficiency_curves(by_init: dict, fractions: list[float], metric: str = HEADLINE_METRIC,
                            protocol: str = "linear") -> dict:
    """init → [(fraction, mean, ci95)] of ``protocol``, as the label-efficiency figure draws it."""
    curves = {}
    for init in INIT_ORDER:
        if init in by_init:
            points = [(f, *_mean_ci(by_init[init].get(fraction_key(protocol, f), {}), metric)) for f in fractions]
            curves[init] = [point for point in points if not math.isnan(point[1])]
    return {init: points for init, points in curves.items() if points}


METRIC_NAMES = {"auroc": "AUROC", "miou": "mIoU", "map50": "mAP@0.5", "map": "mAP@0.5:0.95"}


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def markdown_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    for cells, marks in zip(table.rows, table.bold):
        lines.append("| " + " | ".join(f"**{c}**" if b else c for c, b in zip(cells, marks)) + " |")
    return lines
