"""Aggregate per-run results into one metrics file (for `dvc exp show`) and a Markdown comparison.

``metrics.json`` nests domain → task → init → protocol → metric, so experiment columns read
``medical.cls.simclr.linear.auroc``. Every number in ``report.md`` is read from stage outputs.
"""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.atomic import read_json
from pipeline.metrics import CLASSIFICATION_METRICS

INIT_ORDER = ("floor", "random", "imagenet", "simclr")
PROTOCOLS = ("linear", "finetune")


def collect_metrics(evaluate_dir: Path, pretrain_dir: Path, domains: list[str]) -> dict:
    """Read every ``<evaluate_dir>/<domain>/<init>.json`` and pretrain summary into the nested metrics."""
    metrics: dict = {}
    for domain in domains:
        cls = {}
        for init in INIT_ORDER:
            path = evaluate_dir / domain / f"{init}.json"
            if path.exists():
                cls[init] = read_json(path)["summary"]
        metrics[domain] = {"cls": cls}
        summary = pretrain_dir / domain / "summary.json"
        if summary.exists():
            metrics[domain]["pretrain"] = read_json(summary)["metrics"]
    return metrics


def _cell(summary: dict, metric: str, best: bool) -> str:
    mean, half = summary.get(metric, math.nan), summary.get(f"{metric}_ci95", math.nan)
    if math.isnan(mean):
        return "–"
    text = f"{mean:.3f} ± {half:.3f}"
    return f"**{text}**" if best else text


def _conclusion(cls: dict, protocol: str, metric: str = "auroc") -> str:
    """One sentence comparing SimCLR with ImageNet and random init, following the CIs."""
    simclr = cls.get("simclr", {}).get(protocol)
    if not simclr:
        return ""
    parts = []
    for other in ("imagenet", "random"):
        ref = cls.get(other, {}).get(protocol)
        if not ref:
            continue
        diff = simclr[metric] - ref[metric]
        overlap = abs(diff) <= simclr[f"{metric}_ci95"] + ref[f"{metric}_ci95"]
        verdict = "no significant difference from" if overlap else ("beats" if diff > 0 else "is worse than")
        parts.append(f"{verdict} {other} init ({diff:+.3f} {metric.upper()}"
                     f"{', CIs overlap' if overlap else ', CIs do not overlap'})")
    return f"{protocol.capitalize()}: SimCLR " + "; ".join(parts) + "." if parts else ""


def classification_table(cls: dict) -> list[str]:
    header = ["init", *[f"{p} {m}" for p in PROTOCOLS for m in CLASSIFICATION_METRICS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = {(p, m): max((cls[i][p][m] for i in cls if p in cls[i] and not math.isnan(cls[i][p][m])), default=None)
            for p in PROTOCOLS for m in CLASSIFICATION_METRICS}
    for init in INIT_ORDER:
        if init not in cls:
            continue
        cells = [init]
        for protocol in PROTOCOLS:
            summary = cls[init].get(protocol, {})
            for metric in CLASSIFICATION_METRICS:
                cells.append(_cell(summary, metric, summary.get(metric) == best[(protocol, metric)]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(metrics: dict, context: dict) -> str:
    """The report: one table per domain (mean ± 95 % CI over seeds, best per column in bold)."""
    lines = ["# SimCLR vs ImageNet vs random initialisation", ""]
    lines += [f"- {key}: {value}" for key, value in context.items()]
    for domain, sections in metrics.items():
        lines += ["", f"## {domain}: classification", ""]
        lines += classification_table(sections["cls"])
        lines.append("")
        for protocol in PROTOCOLS:
            sentence = _conclusion(sections["cls"], protocol)
            if sentence:
                lines.append(f"- {sentence}")
        pretrain = sections.get("pretrain")
        if pretrain:
            lines += ["", "SimCLR pretraining: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(pretrain.items()))]
    lines += ["", "Floor: logistic regression on per-channel mean, std and 5/50/95 percentiles.",
              "Linear: logistic regression on frozen pooled features. Fine-tune: whole network, linear head.", ""]
    return "\n".join(lines)
