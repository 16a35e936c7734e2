"""The answer first: the verdict table, one plain sentence per domain, and the headline metrics file.

The user's question is "does in-domain SimCLR beat ImageNet initialisation on my data, and by how much?". The
table answers it per domain and task at the headline label fraction with paired differences and their
intervals (:mod:`pipeline.report.comparisons`); ``metrics.json`` carries the same few dozen numbers so that
``dvc exp show`` compares experiments on them.
"""

from __future__ import annotations

import math

from pipeline.protocols import PRIMARY_METRIC, partner_protocol
from pipeline.report.comparisons import COMPARED_WITH, OTHER_NAMES, VERDICT_WORDS, Comparison, find
from pipeline.report.tables import INIT_ORDER, Table, fraction_title, metric_name

# (row key in metrics.json, task, protocol kind, what the row is called in the report); keys are short so that
# `dvc exp show` fits all eight SimCLR − ImageNet columns of two domains in a 160-column terminal
HEADLINE_ROWS = (("lin", "cls", "linear", "classification, linear probe"),
                 ("ft", "cls", "finetune", "classification, fine-tuned"),
                 ("seg", "seg", "finetune", "segmentation, fine-tuned"),
                 ("det", "det", "finetune", "detection, fine-tuned"))


def headline_metrics(summaries: dict, comparisons: list[Comparison], label_fraction: float) -> dict:
    """domain → row → {init: primary metric (mean over seeds), Δ / Δ_low / Δ_high (SimCLR − ImageNet and its
    95 % interval)}: what DVC tracks, e.g. the column ``medical.seg.Δ``."""
    headline: dict = {}
    for domain, tasks in summaries.items():
        for row, task, kind, _ in HEADLINE_ROWS:
            by_init = tasks.get(task)
            if not by_init:
                continue
            metric = PRIMARY_METRIC[task]
            entry = {init: by_init[init][partner_protocol(task, kind, init)][metric] for init in INIT_ORDER
                     if partner_protocol(task, kind, init) in by_init.get(init, {})}
            versus = find(comparisons, domain, task, kind, label_fraction, "imagenet")
            if versus:
                d = versus.difference
                entry.update({"Δ": _number(d.delta), "Δ_low": _number(d.low), "Δ_high": _number(d.high)})
            if entry:
                headline.setdefault(domain, {})[row] = entry
    return headline


def _number(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def verdict_table(comparisons: list[Comparison], domains: list[str], label_fraction: float) -> Table:
    """Rows domain × task, columns SimCLR − each other init: ``Δ [low, high] verdict``, coloured by verdict."""
    header = ["domain", "task (metric)", *(f"SimCLR − {OTHER_NAMES[o]}" for o in COMPARED_WITH)]
    rows, tones = [], []
    for domain in domains:
        for _, task, kind, title in HEADLINE_ROWS:
            found = [find(comparisons, domain, task, kind, label_fraction, other) for other in COMPARED_WITH]
            if not any(found):
                continue
            rows.append([domain, f"{title} ({metric_name(PRIMARY_METRIC[task])})",
                         *(f"{c.cell()} {VERDICT_WORDS[c.verdict]}" if c else "–" for c in found)])
            tones.append(["", "", *(c.verdict if c else "" for c in found)])
    return Table(header=header, rows=rows, bold=[[False] * len(header) for _ in rows], tone=tones)


def domain_answer(comparisons: list[Comparison], domain: str, label_fraction: float) -> str:
    """One sentence answering the user's question for one domain, from the verdicts against ImageNet."""
    by_verdict: dict[str, list[str]] = {}
    for _, task, kind, title in HEADLINE_ROWS:
        c = find(comparisons, domain, task, kind, label_fraction, "imagenet")
        if c:
            by_verdict.setdefault(c.verdict, []).append(
                f"{title} ({c.difference.delta:+.3f} {metric_name(c.metric)})")
    if not by_verdict:
        return f"{domain}: no SimCLR-vs-ImageNet comparison ran (no SimCLR or ImageNet results with test outputs)."
    clauses = []
    if "better" in by_verdict:
        clauses.append("in-domain SimCLR beats ImageNet initialisation on " + _join(by_verdict["better"]))
    if "worse" in by_verdict:
        clauses.append("ImageNet initialisation beats SimCLR on " + _join(by_verdict["worse"]))
    if "none" in by_verdict:
        clauses.append("the data cannot tell them apart on " + _join(by_verdict["none"]))
    if "n/a" in by_verdict:
        clauses.append("there is too little evidence to compare on " + _join(by_verdict["n/a"]))
    return f"{domain}, {fraction_title(label_fraction)} labels: " + "; ".join(clauses) + "."


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def comparison_sentence(comparisons: list[Comparison], domain: str, task: str, kind: str, fraction: float,
                        setting: str) -> str:
    """``setting`` + SimCLR's paired difference to each other init with its interval and verdict."""
    parts = []
    for other in COMPARED_WITH:
        c = find(comparisons, domain, task, kind, fraction, other)
        if c:
            parts.append(f"vs {OTHER_NAMES[other]} {c.cell()} {metric_name(c.metric)}, {VERDICT_WORDS[c.verdict]} "
                         f"({c.difference.seeds} seed{'s' if c.difference.seeds != 1 else ''})")
    return f"{setting}SimCLR " + "; ".join(parts) + "." if parts else ""
