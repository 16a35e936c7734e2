"""Assemble the report from stage outputs: metrics file, label-efficiency CSVs, figures, Markdown and HTML.

Reads only what earlier stages wrote (evaluate JSONs, pretrain summaries, the ingest chip cache for the
augmentation gallery), so re-running the report never re-trains anything.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.report import figures
from pipeline.atomic import atomic_file, read_json, write_json
from pipeline.augment import TwoViewTransform
from pipeline.data.chips import load_chipset
from pipeline.report.display import display_views
from pipeline.presets import DomainPreset
from pipeline.report.comparisons import Comparison, compare_all, family_note, find
from pipeline.report.tables import (
    HEADLINE_METRIC, INIT_ORDER, classification_table, collect_metrics, fraction_title, label_efficiency_curves,
    label_efficiency_table, metric_name, read_results, read_segmentation_results, segmentation_table, trained_result,
)
from pipeline.report.verdict import comparison_sentence, domain_answer, headline_metrics, verdict_table
from pipeline.report.detection import detection_section
from pipeline.report.training import budget_sentence, finetune_flags, training_block, transfer_findings
from pipeline.report.document import Bullets, Document, Figure, Heading, Paragraph, render_html, render_markdown
from pipeline.ssl.monitors import embedding_std_reference

GALLERY_CHIPS = 4
DATA_FILES = ("manifest.csv", "stats.json", "chips.npy")


@dataclass(frozen=True)
class ReportInputs:
    evaluate_dir: Path
    pretrain_dir: Path
    ingest_dir: Path
    reports_dir: Path
    domains: dict[str, DomainPreset]  # domain → its preset (augmentation, display)
    label_fraction: float
    label_fractions: list[float]
    seed: int
    image_size: int  # SimCLR view size, for the augmentation gallery
    projection_dim: int
    provenance: dict[str, str] = field(default_factory=dict)  # params, versions, hardware: from the stage
    crop_scale: tuple[float, float] | None = None  # simclr.crop_scale, for the gallery (None = the preset's)
    workers: int = 1  # bootstraps side by side (forked processes); results do not depend on it


def build_report(inputs: ReportInputs) -> dict:
    """Write every report file; return the headline written to ``metrics.json`` (the rest: ``results.json``)."""
    domains = list(inputs.domains)
    for folder in ("figures", "label_efficiency"):  # DVC outputs even when no domain fills them
        (inputs.reports_dir / folder).mkdir(parents=True, exist_ok=True)
    results = read_results(inputs.evaluate_dir, domains)
    segmentation = read_segmentation_results(inputs.evaluate_dir, domains)
    detection = read_segmentation_results(inputs.evaluate_dir, domains, task="det")
    metrics = collect_metrics(results, inputs.pretrain_dir, segmentation, detection)
    comparisons = compare_all({domain: {task: by_init for task, by_init in (
        ("cls", results[domain]), ("seg", segmentation[domain]), ("det", detection[domain])) if by_init}
        for domain in domains}, inputs.seed, inputs.workers)
    headline = headline_metrics(metrics, comparisons, inputs.label_fraction)
    write_json(inputs.reports_dir / "metrics.json", headline)
    write_json(inputs.reports_dir / "results.json", {"summaries": metrics,
                                                     "comparisons": [c.as_record() for c in comparisons]})
    document = Document("Does in-domain SimCLR beat ImageNet initialisation?")
    document.add(Heading("Verdict"), Paragraph(
        f"Paired differences at {fraction_title(inputs.label_fraction)} of the training labels. {family_note(comparisons)}"),
        verdict_table(comparisons, domains, inputs.label_fraction),
        Bullets([domain_answer(comparisons, domain, inputs.label_fraction) for domain in domains]
                + [note for domain in domains if (note := pretraining_note(inputs.pretrain_dir, domain))]))
    for domain, preset in inputs.domains.items():
        _domain_section(document, inputs, domain, preset, results[domain], metrics[domain], comparisons)
        _segmentation_section(document, inputs, domain, preset, segmentation[domain], metrics[domain], comparisons)
        detection_section(document, inputs.ingest_dir, inputs.reports_dir / "figures", domain, preset,
                          detection[domain], metrics[domain], comparisons)
        for sweep in LABEL_EFFICIENCY[1:]:
            _label_efficiency_block(document, inputs, domain, metrics[domain], sweep, comparisons)
    document.add(Heading("Protocols"), Bullets([
        "Floor: logistic regression on per-channel mean, std and 5/50/95 percentiles of each chip.",
        "Linear: logistic regression on standardised frozen pooled features. Fine-tune: whole network + linear head "
        "(started from the linear probe when evaluate.finetune.linear_probe_first), weights chosen on the validation "
        "split, the test split scored once.",
        "Tables: mean ± 95 % Student-t half-width over each init's own seeds (each seed draws its own nested, "
        "stratified label subset). Comparisons: " + family_note(comparisons),
    ]), Heading("Provenance"), Bullets(_provenance(inputs, results, segmentation, detection)))
    with atomic_file(inputs.reports_dir / "report.md") as stream:
        stream.write(render_markdown(document, inputs.reports_dir))
    with atomic_file(inputs.reports_dir / "report.html") as stream:
        stream.write(render_html(document))
    return headline


def _domain_section(document: Document, inputs: ReportInputs, domain: str, preset: DomainPreset,
                    results: dict[str, dict], metrics: dict, comparisons: list[Comparison]) -> None:
    figure_dir = inputs.reports_dir / "figures"
    chips = load_chipset(inputs.ingest_dir / domain)
    if not results:  # not in grid.cls_domains (e.g. a set labelled by masks only)
        document.add(Heading(f"{domain}"), Paragraph(
            f"{preset.description}. No classification for this domain (grid.cls_domains)."))
        _pretrain_block(document, inputs, domain, figure_dir)
        _gallery_block(document, inputs, domain, preset, chips, figure_dir)
        return
    cls = metrics["cls"]
    document.add(Heading(f"{domain}: classification"), Paragraph(
        f"{preset.description}. Test chips: {next(iter(results.values()))['n_test'] if results else 0}; "
        f"headline label fraction {inputs.label_fraction:.0%}; best mean per column in bold."))
    sentences = [comparison_sentence(comparisons, domain, "cls", kind, inputs.label_fraction,
                                     f"{kind.capitalize()}, {fraction_title(inputs.label_fraction)} labels: ")
                 for kind in ("linear", "finetune")]
    document.add(classification_table(cls), Bullets([s for s in sentences if s]))
    training_block(document, budget_sentence(results, "Fine-tuning"),
                    finetune_flags(cls, inputs.label_fraction, inputs.label_fractions))
    _label_efficiency_block(document, inputs, domain, metrics, LABEL_EFFICIENCY[0], comparisons)
    _pretrain_block(document, inputs, domain, figure_dir)
    _gallery_block(document, inputs, domain, preset, chips, figure_dir)
    _confusion_and_embedding_blocks(document, domain, results, chips.classes, figure_dir)


@dataclass(frozen=True)
class LabelEfficiencySweep:
    """One label-efficiency curve: a task's protocol scored by one metric; ``suffix`` names its files."""

    task: str
    protocol: str
    metric: str
    what: str
    suffix: str
    floor_protocol: str = ""  # the floor's protocol shown in this sweep's floor row, when it differs

    def by_init(self, metrics: dict) -> dict:
        """init → summaries of this sweep's task, the floor's ``floor_protocol`` runs filed under ``protocol``
        (nothing fine-tunes the image-statistics floor; its linear probe is still the trivial classifier)."""
        by_init = metrics.get(self.task, {})
        if not self.floor_protocol or "floor" not in by_init:
            return by_init
        floor = {self.protocol + key[len(self.floor_protocol):]: summary
                 for key, summary in by_init["floor"].items() if key.startswith(self.floor_protocol)}
        return {**by_init, "floor": floor}


LABEL_EFFICIENCY = (
    LabelEfficiencySweep("cls", "linear", HEADLINE_METRIC, "Linear probe", ""),
    LabelEfficiencySweep("cls", "finetune", HEADLINE_METRIC, "Fine-tuned classifier", "_finetune", "linear"),
    LabelEfficiencySweep("seg", "finetune", "miou", "Segmentation", "_seg"),
    LabelEfficiencySweep("det", "finetune", "map50", "Detection", "_det"),
)


def _label_efficiency_block(document: Document, inputs: ReportInputs, domain: str, metrics: dict,
                            sweep: LabelEfficiencySweep, comparisons: list[Comparison]) -> None:
    """Table, curves (raw with CI bands, and SimCLR − ImageNet with its paired interval; PNG + CSV for
    `dvc plots`) and one comparison sentence per label fraction, when the sweep ran."""
    by_init = sweep.by_init(metrics)
    curves = label_efficiency_curves(by_init, inputs.label_fractions, sweep.metric, sweep.protocol)
    if not curves:
        return
    name, metric = f"{domain}{sweep.suffix}", metric_name(sweep.metric)
    _write_curve_csv(inputs.reports_dir / "label_efficiency" / f"{name}.csv", curves)
    document.add(
        Heading(f"{domain}: label efficiency ({sweep.what.lower()}, {metric})", 3),
        label_efficiency_table(by_init, inputs.label_fractions, sweep.metric, sweep.protocol),
        Figure(figures.label_efficiency(curves, metric, inputs.reports_dir / "figures" / f"label_efficiency_{name}.png",
                                        f"{domain}: {sweep.what.lower()} vs labels",
                                        _paired_curve(comparisons, domain, sweep, inputs.label_fractions)),
               f"{domain}: {sweep.what.lower()} {metric} vs fraction of training labels, 95 % CI bands (left); "
               "SimCLR − ImageNet paired difference with its bootstrap interval (right)"),
        Bullets([sentence for sentence in (comparison_sentence(
            comparisons, domain, sweep.task, sweep.protocol, f, f"{sweep.what}, {fraction_title(f)} labels: ")
            for f in inputs.label_fractions) if sentence]))


def _paired_curve(comparisons: list[Comparison], domain: str, sweep: LabelEfficiencySweep,
                  fractions: list[float]) -> list[tuple[float, float, float, float]]:
    """[(fraction, Δ, low, high)] of SimCLR − ImageNet along one sweep."""
    found = [find(comparisons, domain, sweep.task, sweep.protocol, f, "imagenet") for f in fractions]
    return [(c.fraction, c.difference.delta, c.difference.low, c.difference.high) for c in found if c]


def pretraining_note(pretrain_dir: Path, domain: str) -> str:
    """Whether in-domain pretraining improved on its starting weights, by the validation kNN accuracy the stage
    logs before and after: where it did not, the SimCLR rows measure the starting point, and the verdict says so."""
    summary_path = pretrain_dir / domain / "summary.json"
    if not summary_path.exists():
        return ""
    summary = read_json(summary_path)
    before, after = summary["metrics"].get("knn_acc_before"), summary["metrics"].get("knn_acc")
    if before is None or after is None or before != before or after != after:  # NaN: no kNN monitor
        return ""
    start = {"imagenet": "ImageNet", "random": "random"}.get(summary.get("start", {}).get("init", ""), "initial")
    if summary.get("exported_epoch") == 0:
        return (f"{domain}: **in-domain pretraining did not improve on its {start} starting weights** (validation kNN "
                f"accuracy {before:.3f} at the start, {summary['metrics'].get('knn_acc_last', after):.3f} at the end), "
                "so the stage exported the starting weights (simclr.export: best_knn): the SimCLR rows are those "
                "weights, not a representation SimCLR learned.")
    if after > before:
        return (f"{domain}: in-domain pretraining improved on its {start} starting weights (validation kNN accuracy "
                f"{before:.3f} → {after:.3f}).")
    return (f"{domain}: **in-domain pretraining did not improve on its {start} starting weights** (validation kNN "
            f"accuracy {before:.3f} → {after:.3f}): the SimCLR rows measure those weights after a pretraining that "
            "did not help, not a representation SimCLR learned.")


def _pretrain_block(document: Document, inputs: ReportInputs, domain: str, figure_dir: Path) -> None:
    summary_path = inputs.pretrain_dir / domain / "summary.json"
    if not summary_path.exists():
        return
    summary = read_json(summary_path)
    monitors = summary["metrics"]
    before, after = monitors["knn_acc_before"], monitors["knn_acc"]
    knn = (f"kNN accuracy on the validation chips: {before:.3f} before → {after:.3f} after{_exported(summary)}"
           if before == before and after == after else  # NaN: no image labels in train or val
           "no kNN monitor (no labelled training and validation chips): the last weights are exported")
    document.add(Heading(f"{domain}: SimCLR pretraining", 3), Figure(
        figures.training_curves(summary["history"], figure_dir / f"pretrain_{domain}.png", f"{domain}: SimCLR",
                                embedding_std_reference(inputs.projection_dim)),
        f"{domain}: SimCLR monitors per epoch (epoch 0 = starting weights)"), Bullets([
        knn,
        f"final loss {monitors['final_loss']:.3f}, contrastive top-1 {monitors['final_top1']:.3f}, "
        f"embedding std {monitors['final_embedding_std']:.3f} (collapse → 0; uniform ≈ "
        f"{embedding_std_reference(inputs.projection_dim):.3f})",
    ]))


def _exported(summary: dict) -> str:
    epochs = len([row for row in summary["history"] if row["epoch"] > 0])
    epoch = summary.get("exported_epoch")
    return "" if epoch is None or epoch == epochs else f" (the weights of epoch {epoch} of {epochs}, the best by it)"


def gallery_rows(chips, preset: DomainPreset, image_size: int, seed: int, per_gallery: int = GALLERY_CHIPS,
                 crop_scale: tuple[float, float] | None = None) -> tuple[list[list[np.ndarray]], list[str]]:
    """One training chip per class (up to ``per_gallery``) and its two SimCLR views, display-ready, with the
    column titles; also what ``bench/preset_gallery.py`` draws for a user's folder."""
    train = chips.indices("train")
    picks = [int(train[chips.labels[train] == c][0]) for c in range(len(chips.classes)) if (chips.labels[train] == c).any()]
    picks = (picks or [int(i) for i in train])[:per_gallery]
    transform = TwoViewTransform(preset.augment, image_size, seed, crop_scale)
    rows = []
    for index in picks:
        chip = np.asarray(chips.images[index], dtype=np.float32)
        view_a, view_b = transform(np.ascontiguousarray(chip.transpose(1, 2, 0)), index=index, epoch=1)
        original = display_views(chip, chips.channel_names, preset.display)
        rows.append([original[0], *original[1:], *(display_views(v, chips.channel_names, preset.display)[0]
                                                    for v in (view_a, view_b))])
    titles = ["chip", *(["false colour"] if rows and len(rows[0]) == 4 else []), "view a", "view b"]
    return rows, titles


def _gallery_block(document: Document, inputs: ReportInputs, domain: str, preset: DomainPreset, chips,
                   figure_dir: Path) -> None:
    """A few training chips per class and their two SimCLR views, drawn as the preset says."""
    rows, titles = gallery_rows(chips, preset, inputs.image_size, inputs.seed, crop_scale=inputs.crop_scale)
    if not rows:
        return
    document.add(Heading(f"{domain}: augmentations", 3), Figure(
        figures.augmentation_gallery(rows, titles, figure_dir / f"augmentations_{domain}.png", f"{domain}: two views"),
        f"{domain}: training chips and two SimCLR views ({preset.augment} preset)"))


def _confusion_and_embedding_blocks(document: Document, domain: str, results: dict[str, dict], classes: list[str],
                                    figure_dir: Path) -> None:
    inits = [init for init in INIT_ORDER if init in results and "finetune" in results[init].get("confusion", {})]
    if inits:
        document.add(Heading(f"{domain}: confusion matrices (fine-tune, summed over seeds)", 3), Figure(
            figures.confusion_matrices({i: results[i]["confusion"]["finetune"] for i in inits}, classes,
                                       figure_dir / f"confusion_{domain}.png", f"{domain}: fine-tuned classifiers"),
            f"{domain}: test confusion matrices per initialisation; colour = row-normalised rate, text = count"))
    maps = {i: results[i]["embedding_2d"] for i in inits if results[i].get("embedding_2d", {}).get("x")}
    if maps:
        document.add(Heading(f"{domain}: feature maps (t-SNE of frozen test features)", 3), Figure(
            figures.embedding_maps(maps, classes, figure_dir / f"embedding_{domain}.png", f"{domain}: t-SNE"),
            f"{domain}: 2-D t-SNE of each backbone's frozen test features, coloured by true class"))


def _segmentation_section(document: Document, inputs: ReportInputs, domain: str, preset: DomainPreset,
                          results: dict[str, dict], metrics: dict, comparisons: list[Comparison]) -> None:
    """Table, conclusion and overlays of the segmentation transfer, when the segment stages ran."""
    if "seg" not in metrics:
        return
    seg, first = metrics["seg"], trained_result(results)
    document.add(Heading(f"{domain}: segmentation", 2), Paragraph(
        f"{first['architecture']} decoder on the same backbone, fine-tuned at {first['label_fraction']:.0%} of the "
        f"labelled training chips; {first['n_test']} test chips; pixels marked ignore (nodata, padding) not scored."),
        segmentation_table(seg, first["classes"]))
    transfer_findings(document, comparisons, domain, "seg", results, seg, "Segmentation", "evaluate.segmentation")
    inits = [init for init in INIT_ORDER if init in results and results[init].get("overlays", {}).get("chips")]
    if inits:
        chips = load_chipset(inputs.ingest_dir / domain)
        shown = results[inits[0]]["overlays"]["chips"]
        images = [display_views(np.asarray(chips.images[i], dtype=np.float32), chips.channel_names, preset.display)[0]
                  for i in shown]
        columns = {"truth": [np.asarray(chips.masks[i]) for i in shown],
                   **{init: results[init]["overlays"]["predicted"] for init in inits}}
        document.add(Figure(figures.segmentation_overlays(
            images, columns, first["classes"], inputs.reports_dir / "figures" / f"segmentation_{domain}.png",
            f"{domain}: segmentation (seed {first['seeds'][0]})"),
            f"{domain}: test chips, ground truth and each initialisation's prediction (first seed)"))


def _write_curve_csv(path: Path, curves: dict[str, list[tuple[float, float, float]]]) -> None:
    """label_fraction, then one mean column per init: the shape `dvc plots` draws as one line per column."""
    fractions = sorted({point[0] for points in curves.values() for point in points})
    with atomic_file(path) as stream:
        writer = csv.writer(stream)
        writer.writerow(["label_fraction", *curves])
        for fraction in fractions:
            row = [fraction]
            for points in curves.values():
                row.append(next((round(mean, 6) for f, mean, _ in points if f == fraction), ""))
            writer.writerow(row)


def _provenance(inputs: ReportInputs, results: dict[str, dict[str, dict]],
                segmentation: dict[str, dict[str, dict]],
                detection: dict[str, dict[str, dict]] | None = None) -> list[str]:
    lines = [f"{key}: {value}" for key, value in inputs.provenance.items()]
    for domain in inputs.domains:
        digests = ", ".join(f"{name} {file_sha256(inputs.ingest_dir / domain / name)[:12]}"
                            for name in DATA_FILES if (inputs.ingest_dir / domain / name).exists())
        lines.append(f"data {domain} (sha256): {digests}")
        walls = {init: result.get("wall_s") for init, result in results[domain].items() if result.get("wall_s")}
        walls.update({f"seg_{init}": result["wall_s"] for init, result in segmentation[domain].items()
                      if result.get("wall_s")})
        walls.update({f"det_{init}": result["wall_s"] for init, result in (detection or {}).get(domain, {}).items()
                      if result.get("wall_s")})
        summary = inputs.pretrain_dir / domain / "summary.json"
        if summary.exists() and read_json(summary).get("wall_s"):
            walls = {"pretrain": read_json(summary)["wall_s"], **walls}
        ingest = inputs.reports_dir / "ingest" / f"{domain}.json"
        if ingest.exists() and read_json(ingest).get("wall_s"):
            walls = {"ingest": read_json(ingest)["wall_s"], **walls}
        if ingest.exists() and read_json(ingest).get("near_duplicates"):
            lines.append(f"near-duplicates {domain}: {near_duplicate_line(read_json(ingest)['near_duplicates'])}")
        if walls:
            lines.append(f"wall time {domain}: " + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in walls.items()))
    return lines


def near_duplicate_line(near: dict) -> str:
    """``test chips with a train near-duplicate 3 of 120 (same label 2), …, dropped 0 (cosine ≥ 0.95 …)``."""
    pairs = [(key, value) for key, value in near.items() if "-" in key and isinstance(value, dict)]
    text = ", ".join(f"{key.split('-')[1]} chips with a {key.split('-')[0]} near-duplicate {value['chips']} of "
                     f"{next(v for k, v in value.items() if k.startswith('of_'))} (same label {value['same_label']})"
                     for key, value in pairs)
    grouped = near.get("grouped")
    action = (f"grouped {grouped['chips']} chips in {grouped['sets']} sets into one split each" if isinstance(grouped, dict)
              else f"not grouped ({grouped.split(': ', 1)[1]})" if grouped else f"dropped {near.get('dropped', 0)}")
    return f"{text}; {action} (cosine ≥ {near['similarity_at_least']} of {near['fingerprint']})"


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()
