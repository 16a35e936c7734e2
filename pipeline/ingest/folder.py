"""Ingest: a folder of DICOM or GeoTIFF files → the decoded chip cache (see :mod:`pipeline.data.chips`).

Which reader and which split a domain uses comes from its preset (:data:`pipeline.ingest.source_kinds.SOURCE_KINDS`,
``SPLITTERS`` below), never from the domain's name. A corrupt, truncated or unsupported file is rejected with a
one-line reason in the outcome report and the rest of the folder is still ingested (``ingest.strict`` stops at
the first one instead). Files are read by ``ingest.workers`` processes and merged in sorted order, so the cache
does not depend on the number of workers.

DICOM-SEG and RTSTRUCT objects are labels, not images: a first pass in the main process
(:mod:`pipeline.ingest.segmentations`) turns them into masks that travel with the tasks of the images they
reference, and the report counts them under ``files.labels`` with one ``labels`` entry each.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.config_data import DomainDataConfig
from pipeline.ingest.boxes import boxes_for_chips
from pipeline.data.chips import MASK_IGNORE, channel_statistics, write_chipset
from pipeline.ingest.file_pool import read_in_order
from pipeline.ingest.spill import SpilledArrays
from pipeline.ingest.segmentations import FolderLabels
from pipeline.ingest.dicom_source import normalise_deferred
from pipeline.ingest.phi import PathRedactor, phi_salt
from pipeline.ingest.source_kinds import SOURCE_KINDS
from pipeline.ingest.sources import (
    FileChips, FileTask, constant_chips, read_class_names, read_file_safely, read_labels_csv,
    read_mask_classes,
)
from pipeline.ingest.value_ranges import ClipCounts, clip_counts, fit_range, to_unit
from pipeline.ingest.splits import check_no_leakage, group_split, spatial_block_split
from pipeline.presets import DomainPreset

log = logging.getLogger(__name__)

class IngestError(ValueError):
    """``ingest.strict``: the first bad file stops the run; the message is that file's one line."""


class IngestFailed(ValueError):
    """No chip came out of the folder. The message is one line with the most common reasons; ``report`` is the
    outcome report (every file's reason), for the stage to write all the same."""

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class FileOutcome:
    """What one readable file (not rejected, not skipped) gave, for the report."""

    intensity: str = ""
    modality: str = ""
    group_by: str = ""
    dropped_low_valid: int = 0
    dropped_constant: int = 0
    no_range: int = 0  # chips left out: their value-range group has no chip in the train split
    no_chip_reason: str = ""


@dataclass
class IngestedChips:
    """Everything ingest decoded from one source folder, before it is written."""

    images: list[np.ndarray] = field(default_factory=list)  # each (C, S, S) float32 in [0, 1]
    valid: list[np.ndarray] = field(default_factory=list)  # each (S, S) bool
    rows: list[dict[str, object]] = field(default_factory=list)
    channel_names: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    masks: list[np.ndarray | None] = field(default_factory=list)
    mask_classes: list[str] = field(default_factory=list)
    deferred: list[tuple[str, bool]] = field(default_factory=list)  # per chip: (normalisation group, invert)
    range_group: list[str] = field(default_factory=list)  # per chip: "" or its value-range group (GeoTIFF)
    clip_counts: ClipCounts = field(default_factory=ClipCounts)  # pixels clipped by a configured value range
    band_plan: dict[str, object] = field(default_factory=dict)  # GeoTIFF: the domain's band set, for the report
    rejected: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    labels: list[dict[str, object]] = field(default_factory=list)  # DICOM-SEG / RTSTRUCT used as masks
    files: dict[str, FileOutcome] = field(default_factory=dict)  # readable files by relative path
    modalities: dict[str, Counter] = field(default_factory=dict)  # DICOM Modality → outcome → files
    identifiers: set[str] = field(default_factory=set)  # raw PHI of the folder's files, to redact paths only
    files_seen: int = 0

    def add(self, result: FileChips) -> None:
        """Merge one file's result; a file whose channels differ from the first file's is rejected."""
        self.identifiers.update(result.phi)
        if result.images and self.channel_names and result.channel_names != self.channel_names:
            result = FileChips(result.relative, modality=result.modality,
                               rejected=f"{result.relative}: channels {result.channel_names} "
                                        f"differ from earlier files {self.channel_names}")
        if result.rejected or result.skipped:
            outcome = self.rejected if result.rejected else self.skipped
            outcome.append({"path": result.relative, "reason": result.rejected or result.skipped})
            self._count_modality(result.modality, "rejected" if result.rejected else "skipped")
            return
        if result.images:
            self.channel_names = self.channel_names or result.channel_names
        self.files[result.relative] = FileOutcome(
            intensity=result.intensity, modality=result.modality, group_by=result.group_by,
            dropped_low_valid=result.dropped_low_valid, dropped_constant=result.dropped_constant,
            no_chip_reason=result.no_chip_reason)
        self.images += result.images
        self.valid += result.valid
        self.rows += result.rows
        self.masks += result.masks or [None] * len(result.images)
        self.deferred += [(result.deferred_group, result.invert)] * len(result.images)
        self.range_group += [result.range_group] * len(result.images)
        self.clip_counts.add(result.clip_counts)

    def _count_modality(self, modality: str, outcome: str) -> None:
        if modality:
            self.modalities.setdefault(modality, Counter())[outcome] += 1

    def add_label_objects(self, found: FolderLabels, strict: bool) -> None:
        """Merge the first pass's outcomes; ``strict`` stops at the first (by path) unusable label object."""
        self.identifiers.update(found.identifiers)
        bad = sorted(found.rejected + found.skipped, key=lambda line: line["path"])
        if strict and bad:
            raise IngestError(PathRedactor(self.identifiers, phi_salt()).text(bad[0]["reason"]))
        self.rejected += found.rejected
        self.skipped += found.skipped
        self.labels += found.used

    def finalise(self, percentiles: tuple[float, float]) -> None:
        """Map deferred chips (MR series) to [0, 1], drop the constant ones among them, and settle which
        files gave chips: a readable file that gave none is not *ingested* but has its own reason."""
        if any(group for group, _ in self.deferred):
            normalise_deferred(self.images, self.valid, self.deferred, percentiles)
            flags = constant_chips(self.images, self.valid)
            constant = [flag and bool(group) for flag, (group, _) in zip(flags, self.deferred)]
            for index in np.flatnonzero(constant):
                self.files[str(self.rows[index]["source"])].dropped_constant += 1
            self.keep_chips([not flag for flag in constant])
        chips = Counter(str(row["source"]) for row in self.rows)
        for relative, outcome in self.files.items():
            self._count_modality(outcome.modality, "ingested" if chips[relative] else "no_chips")

    def keep_chips(self, keep: list[bool]) -> None:
        """Drop the chips where ``keep`` is False from every per-chip list."""
        for name in ("images", "valid", "rows", "masks", "deferred", "range_group"):
            values = getattr(self, name)
            if isinstance(values, SpilledArrays):
                values.keep(keep)
            else:
                setattr(self, name, [value for value, kept in zip(values, keep) if kept])

    def spill_to(self, folder: Path) -> None:
        """Keep the chips, valid masks and segmentation masks in files below ``folder`` from now on (before the
        first :meth:`add`), so memory does not grow with the number of chips."""
        folder.mkdir(parents=True, exist_ok=True)
        self.images = SpilledArrays(folder / "images.bin", np.float32)
        self.valid = SpilledArrays(folder / "valid.bin", np.bool_)
        self.masks = SpilledArrays(folder / "masks.bin", np.uint8, fill=MASK_IGNORE)

    def close(self) -> None:
        """Delete the spilled files and their folder, if any."""
        folders = set()
        for values in (self.images, self.valid, self.masks):
            if isinstance(values, SpilledArrays):
                values.close()
                folders.add(values.path.parent)
        for folder in folders:
            folder.rmdir()  # it held only the spilled files

    def subset(self, name: str, indexes: list[int]) -> Sequence:
        """The chips (``name``: images / valid) at ``indexes``, read lazily when they are spilled."""
        values = getattr(self, name)
        return values.subset(indexes) if isinstance(values, SpilledArrays) else [values[i] for i in indexes]

    def has_masks(self) -> bool:
        return self.masks.any_present() if isinstance(self.masks, SpilledArrays) else \
            any(mask is not None for mask in self.masks)

    def map_pending_ranges(self, splits: list[str], cfg: DomainDataConfig) -> tuple[dict, list[str]]:
        """Fit each range group's per-channel value range on its train-split chips (all its chips when it has no
        training chip), map every pending chip to [0, 1], then drop the ones that are constant
        (:func:`constant_chips`). Returns the report's ``value_range`` entry and the splits of the chips kept."""
        percentiles = tuple(cfg.geotiff.range_percentiles)
        text = "-".join(f"p{v:g}" for v in percentiles)
        groups, dropped = {}, set()
        for group in sorted({g for g in self.range_group if g}):
            members = [i for i, g in enumerate(self.range_group) if g == group]
            train = [i for i in members if splits[i] == "train"]
            if not train:  # fitting on validation or test pixels would leak them into the mapping: leave it out
                for i in members:
                    self.files[str(self.rows[i]["source"])].no_range += 1
                dropped |= set(members)
                groups[group] = {"from": "no chip in the train split: not mapped, its chips left out",
                                 "chips": len(members)}
                continue
            low, high = fit_range(self.subset("images", train), self.subset("valid", train), percentiles)
            counts = ClipCounts()
            for i in members:
                counts.add(clip_counts(self.images[i], self.valid[i], low, high))
                self.images[i] = to_unit(self.images[i], self.valid[i], low, high)
            constant = constant_chips(self.subset("images", members), self.subset("valid", members))
            for i, flag in zip(members, constant):
                if flag:
                    self.files[str(self.rows[i]["source"])].dropped_constant += 1
                    dropped.add(i)
            groups[group] = {"from": f"train split: {text} of valid pixels", "chips": len(members),
                             "channels": {name: [round(float(a), 6), round(float(b), 6)]
                                          for name, a, b in zip(self.channel_names, low, high)},
                             "clipped": counts.fractions(self.channel_names)}
        keep = [i not in dropped for i in range(len(self.images))]
        self.keep_chips(keep)
        return {"groups": groups}, [split for split, kept in zip(splits, keep) if kept]

    def no_chip_files(self) -> list[dict[str, str]]:
        """One line per readable file that gave no chip, with why."""
        chips = Counter(str(row["source"]) for row in self.rows)
        return [{"path": relative, "reason": f"{relative}: {_no_chip_reason(outcome)}"}
                for relative, outcome in self.files.items() if not chips[relative]]

    def constant_chip_files(self) -> list[dict[str, object]]:
        """One line per file that lost chips to the constant rule (whether or not others were kept)."""
        return [{"path": relative, "chips": outcome.dropped_constant,
                 "reason": f"{relative}: {outcome.dropped_constant} chip(s) constant after {outcome.intensity}"}
                for relative, outcome in self.files.items() if outcome.dropped_constant]


def _no_chip_reason(outcome: FileOutcome) -> str:
    if outcome.no_chip_reason:
        return outcome.no_chip_reason
    parts = [f"{outcome.dropped_constant} constant after {outcome.intensity}"] if outcome.dropped_constant else []
    if outcome.dropped_low_valid:
        parts.append(f"{outcome.dropped_low_valid} under min_valid_fraction")
    if outcome.no_range:
        parts.append(f"{outcome.no_range} in a value-range group with no chip in the train split (set "
                     "value_range, or give the split more of these scenes)")
    return "no chips: " + (", ".join(parts) if parts else "nothing to read")


def read_folder(source: Path, cfg: DomainDataConfig, reader: str, workers: int = 1, strict: bool = False,
                domain: str = "", spill_dir: Path | None = None) -> IngestedChips:
    """Read every file of one kind below ``source``, in sorted order whatever the number of workers; with
    ``spill_dir``, the chips go to files there as they are read (call the result's ``close`` when done)."""
    kind = SOURCE_KINDS[reader]
    labels = read_labels_csv(source)
    class_names = read_class_names(source, list(labels.values()))
    salt = phi_salt()
    files = kind.list_files(source)
    mask_classes = read_mask_classes(source)
    found = kind.find_labels(source, files, mask_classes) if kind.find_labels else FolderLabels(files)
    plan = kind.plan_files(source, found.images, cfg, domain) if kind.plan_files else None
    if plan is not None:
        found.rejected += plan.rejected
        found.images = [path for path in found.images if path.relative_to(source).as_posix()
                        not in {line["path"] for line in plan.rejected}]
    tasks = [FileTask(path, path.relative_to(source).as_posix(), source, cfg, labels, class_names, salt,
                      domain, found.frame_masks.get(path), bands=plan.bands.get(path) if plan else None,
                      channel_names=plan.channel_names if plan else None) for path in found.images]
    out = IngestedChips(files_seen=len(files), mask_classes=found.mask_classes or mask_classes,
                        band_plan=plan.summary if plan else {})
    if spill_dir is not None:
        out.spill_to(spill_dir)
    try:
        out.add_label_objects(found, strict)
        for result in read_in_order(partial(read_file_safely, kind.read_file), tasks, workers):
            rejected_before = len(out.rejected)
            if not (strict and (result.rejected or result.skipped)):
                out.add(result)
            if strict and (result.rejected or result.skipped or len(out.rejected) > rejected_before):
                redact = PathRedactor(out.identifiers | set(result.phi), salt)
                raise IngestError(redact.text(result.rejected or result.skipped or out.rejected[-1]["reason"]))
        out.finalise(tuple(cfg.dicom.percentiles))
    except BaseException:
        out.close()
        raise
    out.classes = read_class_names(source, list(labels.values()) + [str(r["label"]) for r in out.rows])
    return out


def _split_by_group(rows, cfg: DomainDataConfig, seed: int) -> np.ndarray:
    return group_split([r["group"] for r in rows], tuple(cfg.split_fractions), seed,
                       labels=[r["label"] for r in rows])


def _split_by_block(rows, cfg: DomainDataConfig, seed: int) -> np.ndarray:
    return spatial_block_split([r["source"] for r in rows], [r["row"] for r in rows], [r["col"] for r in rows],
                               cfg.geotiff.block_size_px, tuple(cfg.split_fractions), seed, cfg.geotiff.buffer_px,
                               chip_size_px=cfg.chip_size)


def _block_of(row: dict, cfg: DomainDataConfig) -> str:
    size = cfg.geotiff.block_size_px
    return f"{row['source']}#{int(row['row']) // size}/{int(row['col']) // size}"


SPLITTERS = {"group": _split_by_group, "spatial_block": _split_by_block}
LEAKAGE_UNITS = {"group": lambda row, cfg: str(row["group"]), "spatial_block": _block_of}


def ingest_folder(source: Path, cfg: DomainDataConfig, preset: DomainPreset, seed: int, out_dir: Path,
                  workers: int = 1, strict: bool = False, domain: str = "", source_label: str | None = None) -> dict:
    """Decode, split, compute train-only statistics and write the chip cache into ``out_dir``.

    Returns the outcome report (also written as ``ingest_report.json``): files seen / ingested / without chips /
    rejected / skipped, one ``{path, reason}`` line per such file, chips kept and dropped, files per modality and
    per grouping key, label counts. Paths are redacted where they carry a patient identifier
    (:class:`~pipeline.ingest.phi.PathRedactor`). ``domain`` is named in reasons that point at a config key;
    ``source_label`` is what the report calls the source (default: its path).

    Raises:
        IngestFailed: no chip at all; its ``report`` holds every file's reason.
    """
    if not source.is_dir():
        raise FileNotFoundError(f"data source {source} is not a folder")
    found = read_folder(source, cfg, preset.reader, workers, strict, domain, spill_dir=out_dir / ".spill")
    try:
        return _split_and_write(found, source, cfg, preset, seed, out_dir, domain, source_label)
    finally:
        found.close()


def _split_and_write(found: IngestedChips, source: Path, cfg: DomainDataConfig, preset: DomainPreset, seed: int,
                     out_dir: Path, domain: str, source_label: str | None) -> dict:
    """Everything after reading: splits, value ranges, train-only statistics, the cache and its report."""
    redact = PathRedactor(found.identifiers, phi_salt())
    label = redact.text(str(source if source_label is None else source_label))
    if not found.images:
        report = {"source": label, **outcome_report(found, 0, 0, {}, redact)}
        raise IngestFailed(f"{label}: no chips from {found.files_seen} {preset.reader} files "
                           f"({summarise_reasons(report)})", report)
    splits = [str(split) for split in SPLITTERS[preset.split](found.rows, cfg, seed)]
    value_range = {}
    if any(found.range_group):
        value_range, splits = found.map_pending_ranges(splits, cfg)
    elif found.clip_counts.total.size:
        value_range = {"from": f"data.{domain or '<domain>'}.geotiff.value_range",
                       "clipped": found.clip_counts.fractions(found.channel_names)}
    if not found.images:
        report = {"source": label, **outcome_report(found, 0, 0, {}, redact)}
        raise IngestFailed(f"{label}: no chips left once each channel's value range was fitted "
                           f"({summarise_reasons(report)})", report)
    keep = [i for i, split in enumerate(splits) if split != "buffer"]
    rows = [{**found.rows[i], "split": str(splits[i]), "chip_id": n} for n, i in enumerate(keep)]
    check_no_leakage([LEAKAGE_UNITS[preset.split](row, cfg) for row in rows], [row["split"] for row in rows])
    train = [i for i, row in zip(keep, rows) if row["split"] == "train"]
    mean, std = channel_statistics(found.subset("images", train), found.subset("valid", train))
    masks = found.subset("masks", keep) if found.has_masks() else None
    mask_classes = found.mask_classes if masks is not None else []
    counts = {split: dict(sorted(Counter(r["label"] or "<unlabelled>" for r in rows if r["split"] == split).items()))
              for split in ("train", "val", "test")}
    stats = {"channel_names": found.channel_names, "classes": found.classes, "mean": mean, "std": std,
             "chip_size": cfg.chip_size, "counts": counts, "mask_classes": mask_classes,
             "statistics_from": "train split, 2-98 % clipped", **({"value_range": value_range} if value_range else {})}
    write_chipset(out_dir, found.subset("images", keep), found.subset("valid", keep), [{**row, "source": redact.path(str(row["source"]))} for row in rows], stats,
                  masks, boxes_for_chips(rows, source, cfg.chip_size))  # boxes from the source's real paths
    report = {"source": label, **outcome_report(found, len(rows), len(splits) - len(keep), counts, redact)}
    if value_range:
        report["value_range"] = value_range
    (out_dir / "ingest_report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("ingested %d chips from %s: %s", len(rows), label, report["files"])
    return report


def outcome_report(found: IngestedChips, chips: int, buffer_dropped: int, counts: dict,
                   redact: PathRedactor) -> dict:
    """Counts of every outcome (seen = ingested + no_chips + rejected + skipped + labels), then one line per file
    that gave no chips and why, per file that lost chips as constant, and one entry per segmentation object
    used as labels; DICOM folders also count files per modality and outcome, and per grouping key."""
    no_chips = found.no_chip_files()
    ingested = {relative: outcome for relative, outcome in found.files.items()
                if relative not in {line["path"] for line in no_chips}}
    report = {
        "files": {"seen": found.files_seen, "ingested": len(ingested), "no_chips": len(no_chips),
                  "rejected": len(found.rejected), "skipped": len(found.skipped), "labels": len(found.labels)},
        "chips": {"kept": chips, "dropped_low_valid_fraction": sum(o.dropped_low_valid for o in found.files.values()),
                  "dropped_constant": sum(o.dropped_constant for o in found.files.values()),
                  "dropped_no_train_range": sum(o.no_range for o in found.files.values()),
                  "dropped_split_buffer": buffer_dropped},
        "no_chips": _redacted(no_chips, redact),
        "constant_chips": _redacted(found.constant_chip_files(), redact),
        "rejected": _redacted(found.rejected, redact),
        "skipped": _redacted(found.skipped, redact),
        "labels": _redacted(found.labels, redact),
        "counts": counts,
        "intensity": dict(sorted(Counter(o.intensity for o in ingested.values() if o.intensity).items())),
    }
    if found.band_plan:
        report["bands"] = found.band_plan
    if found.modalities:
        report["modalities"] = {m: dict(sorted(c.items())) for m, c in sorted(found.modalities.items())}
    grouped = Counter(o.group_by for o in ingested.values() if o.group_by)
    if grouped:
        report["grouped_by"] = {key: grouped[key] for key in ("patient", "study", "series", "file") if grouped[key]}
    return report


def _redacted(entries: list[dict], redact: PathRedactor) -> list[dict]:
    """Report lines with every path (and any identifier in a reason) redacted."""
    return [{key: redact.text(value) if isinstance(value, str) else value for key, value in entry.items()}
            for entry in entries]


def summarise_reasons(report: dict, limit: int = 3) -> str:
    """``12 rejected, 3 skipped of 15 files; most common: 10 x <reason> (first: <path>); …``: one line."""
    files = report["files"]
    lines = report["rejected"] + report["skipped"] + report["no_chips"]
    causes: Counter = Counter()
    first: dict[str, str] = {}
    for line in lines:
        cause = line["reason"].removeprefix(f"{line['path']}: ")
        causes[cause] += 1
        first.setdefault(cause, line["path"])
    outcome = ", ".join(f"{files[key]} {key.replace('_', ' ')}" for key in ("rejected", "skipped", "no_chips")
                        if files[key])
    common = "; ".join(f"{count} x {cause} (first: {first[cause]})" for cause, count in causes.most_common(limit))
    return f"{outcome or 'nothing read'}; most common: {common}" if common else outcome or "no files found"
