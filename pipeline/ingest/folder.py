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
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.config_data import DomainDataConfig
from pipeline.data.chips import channel_statistics, write_chipset
from pipeline.ingest.boxes import boxes_for_chips
from pipeline.ingest.file_pool import read_in_order
from pipeline.ingest.ingested import IngestedChips, IngestError
from pipeline.ingest.part_spec import WHOLE, PartSpec
from pipeline.ingest.spill import LARGE_FILE_BYTES, SpilledArrays, keep_items
from pipeline.ingest.phi import PathRedactor, phi_salt
from pipeline.ingest.segmentations import FolderLabels
from pipeline.ingest.source_kinds import SOURCE_KINDS
from pipeline.ingest.near_duplicates import THUMBNAIL, find_near_duplicates, fingerprints, near_duplicate_sets
from pipeline.ingest.labels_table import read_labels_csv, read_labels_table
from pipeline.ingest.sources import FileTask, read_class_names, read_file_safely, read_mask_classes
from pipeline.ingest.splits import (check_no_leakage, group_split, join_blocks_across_files, join_units,
                                    map_cells, spatial_block_split)
from pipeline.presets import DomainPreset

log = logging.getLogger(__name__)


class IngestFailed(ValueError):
    """No chip came out of the folder. The message is one line with the most common reasons; ``report`` is the
    outcome report (every file's reason), for the stage to write all the same."""

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class DuplicatePolicy:
    """``ingest.near_duplicates`` (report / drop / group / off) and ``ingest.near_duplicate_similarity``."""

    mode: str = "report"
    similarity: float = 0.95


def read_folder(source: Path, cfg: DomainDataConfig, reader: str, workers: int = 1, strict: bool = False,
                domain: str = "", spill_dir: Path | None = None) -> IngestedChips:
    """Read every file of one kind below ``source``, in sorted order whatever the number of workers; with
    ``spill_dir``, the chips go to files there as they are read (call the result's ``close`` when done)."""
    return finish_reading(read_files(source, cfg, reader, workers, strict, domain, spill_dir), source, cfg)


def read_files(source: Path, cfg: DomainDataConfig, reader: str, workers: int = 1, strict: bool = False,
               domain: str = "", spill_dir: Path | None = None, part: PartSpec = WHOLE) -> IngestedChips:
    """Every file's chips and outcome, before anything that needs all files (:func:`finish_reading`).

    ``part``: only that part's contiguous slice of the sorted files is read (:mod:`pipeline.ingest.parts`); the
    folder-wide first passes (label objects, a GeoTIFF band plan) run in every part, and the first part keeps
    their outcomes, so the parts chained in order hold what one whole read holds.
    """
    kind = SOURCE_KINDS[reader]
    class_names = read_class_names(source, list(read_labels_csv(source).values()))
    salt = phi_salt()
    files = kind.list_files(source)
    table = read_labels_table(source, files)
    labels = table.labels
    mask_classes = read_mask_classes(source)
    found = kind.find_labels(source, files, mask_classes) if kind.find_labels else FolderLabels(files)
    plan = kind.plan_files(source, found.images, cfg, domain) if kind.plan_files else None
    if plan is not None:
        found.rejected += plan.rejected
        found.images = [path for path in found.images if path.relative_to(source).as_posix()
                        not in {line["path"] for line in plan.rejected}]
    images = found.images if part.count == 1 else \
        found.images[part.slice_of([path.stat().st_size for path in found.images])]
    tasks = [FileTask(path, path.relative_to(source).as_posix(), source, cfg, labels, class_names, salt,
                      domain, found.frame_masks.get(path), bands=plan.bands.get(path) if plan else None,
                      channel_names=plan.channel_names if plan else None,
                      spill_dir=str(spill_dir / "files") if spill_dir else "", spill_above=LARGE_FILE_BYTES)
             for path in images]
    out = IngestedChips(files_seen=len(files), mask_classes=found.mask_classes or mask_classes,
                        band_plan=plan.summary if plan else {}, user_splits=table.splits,
                        labels_csv=table.report())
    if spill_dir is not None:
        out.spill_to(spill_dir)
    try:
        if part.index == 0:
            out.add_label_objects(found, strict)
        out.identifiers.update(found.identifiers)
        for result in read_in_order(partial(read_file_safely, kind.read_file), tasks, workers):
            rejected_before = len(out.rejected)
            if not (strict and (result.rejected or result.skipped)):
                out.add(result)
            if strict and (result.rejected or result.skipped or len(out.rejected) > rejected_before):
                redact = PathRedactor(out.identifiers | set(result.phi), salt)
                raise IngestError(redact.text(result.rejected or result.skipped or out.rejected[-1]["reason"]))
    except BaseException:
        out.close()
        raise
    return out


def finish_reading(out: IngestedChips, source: Path, cfg: DomainDataConfig) -> IngestedChips:
    """The passes over every file's chips (an MR series' mapping, which files gave chips) and the class names."""
    try:
        out.finalise(tuple(cfg.dicom.percentiles))
    except BaseException:
        out.close()
        raise
    out.classes = read_class_names(source, list(read_labels_csv(source).values()) +
                                   [str(r["label"]) for r in out.rows])
    return out


def _split_by_group(rows, cfg: DomainDataConfig, seed: int, links: np.ndarray | None = None) -> np.ndarray:
    groups = [str(r["group"]) for r in rows]
    return group_split(groups if links is None else join_units(groups, links), tuple(cfg.split_fractions), seed,
                       labels=[r["label"] for r in rows])


def _split_by_block(rows, cfg: DomainDataConfig, seed: int, links: np.ndarray | None = None) -> np.ndarray:
    return spatial_block_split([r["source"] for r in rows], [r["row"] for r in rows], [r["col"] for r in rows],
                               cfg.geotiff.block_size_px, tuple(cfg.split_fractions), seed, cfg.geotiff.buffer_px,
                               chip_size_px=cfg.chip_size, cells=_cells(rows, cfg), links=links)


def _cells(rows, cfg: DomainDataConfig) -> list[str]:
    return map_cells([str(r.get("crs", "")) for r in rows], [str(r.get("transform", "")) for r in rows],
                     cfg.chip_size, cfg.geotiff.block_size_px)


def _blocks(rows, cfg: DomainDataConfig) -> list[str]:
    """Each chip's spatial block, joined with the blocks of other files at the same place (the split's groups)."""
    size = cfg.geotiff.block_size_px
    blocks = [f"{row['source']}#{int(row['row']) // size}/{int(row['col']) // size}" for row in rows]
    return join_blocks_across_files(blocks, [str(row["source"]) for row in rows], _cells(rows, cfg))


SPLITTERS = {"group": _split_by_group, "spatial_block": _split_by_block}
LEAKAGE_UNITS = {"group": lambda rows, cfg: [str(row["group"]) for row in rows], "spatial_block": _blocks}


def ingest_folder(source: Path, cfg: DomainDataConfig, preset: DomainPreset, seed: int, out_dir: Path,
                  workers: int = 1, strict: bool = False, domain: str = "", source_label: str | None = None,
                  duplicates: DuplicatePolicy = DuplicatePolicy()) -> dict:
    """Decode, split, compute train-only statistics and write the chip cache into ``out_dir``.

    Returns the outcome report (also written as ``ingest_report.json``): files seen / ingested / without chips /
    rejected / skipped, one ``{path, reason}`` line per such file, chips kept and dropped, files per modality and
    per grouping key, label counts. Paths are redacted where they carry a patient identifier
    (:class:`~pipeline.ingest.phi.PathRedactor`). ``domain`` is named in reasons that point at a config key;
    ``source_label`` is what the report calls the source (default: its path); ``duplicates``: what to do about
    near-duplicate chips across splits (:mod:`pipeline.ingest.near_duplicates`).

    Raises:
        IngestFailed: no chip at all; its ``report`` holds every file's reason.
    """
    if not source.is_dir():
        raise FileNotFoundError(f"data source {source} is not a folder")
    found = read_folder(source, cfg, preset.reader, workers, strict, domain, spill_dir=out_dir / ".spill")
    try:
        return split_and_write(found, source, cfg, preset, seed, out_dir, domain, source_label, duplicates)
    finally:
        found.close()


def split_and_write(found: IngestedChips, source: Path, cfg: DomainDataConfig, preset: DomainPreset, seed: int,
                    out_dir: Path, domain: str, source_label: str | None,
                    duplicates: DuplicatePolicy = DuplicatePolicy()) -> dict:
    """Everything after reading: splits, value ranges, train-only statistics, the cache and its report."""
    redact = PathRedactor(found.identifiers, phi_salt())
    label = redact.text(str(source if source_label is None else source_label))
    if not found.images:
        report = {"source": label, **outcome_report(found, 0, 0, {}, redact)}
        raise IngestFailed(f"{label}: no chips from {found.files_seen} {preset.reader} files "
                           f"({summarise_reasons(report)})", report)
    links = None
    if found.user_splits:  # labels.csv's split column; a file it does not list only serves pretraining
        splits = [found.user_splits.get(str(row["source"]), "train") for row in found.rows]
    else:
        links = _near_duplicate_links(found, duplicates)
        splits = [str(split) for split in SPLITTERS[preset.split](found.rows, cfg, seed, links)]
    value_range = {}
    if any(found.range_group):
        value_range, splits = found.map_pending_ranges(splits, cfg, with_fingerprints=duplicates.mode != "off")
    elif found.clip_counts.total.size:
        value_range = {"from": f"data.{domain or '<domain>'}.geotiff.value_range",
                       "clipped": found.clip_counts.fractions(found.channel_names)}
    if not found.images:
        report = {"source": label, **outcome_report(found, 0, 0, {}, redact)}
        raise IngestFailed(f"{label}: no chips left once each channel's value range was fitted "
                           f"({summarise_reasons(report)})", report)
    keep = [i for i, split in enumerate(splits) if split != "buffer"]
    rows = [{**found.rows[i], "split": str(splits[i]), "chip_id": n} for n, i in enumerate(keep)]
    units = LEAKAGE_UNITS[preset.split](rows, cfg)
    if found.user_splits:
        check_user_split(rows, units, preset.split, redact)
    check_no_leakage(units, [row["split"] for row in rows])
    keep, rows, near = _near_duplicates(found, keep, rows, duplicates)
    if links is not None:  # before any value-range rejection: sets as the split saw them
        near["grouped"] = _grouped_summary(links)
    train = [i for i, row in zip(keep, rows) if row["split"] == "train"]
    mean, std = channel_statistics(found.subset("images", train), found.subset("valid", train))
    masks = found.subset("masks", keep) if found.has_masks() else None
    mask_classes = found.mask_classes if masks is not None else []
    counts = {split: dict(sorted(Counter(r["label"] or "<unlabelled>" for r in rows if r["split"] == split).items()))
              for split in ("train", "val", "test")}
    stats = {"channel_names": found.channel_names, "classes": found.classes, "mean": mean, "std": std,
             "chip_size": cfg.chip_size, "counts": counts, "mask_classes": mask_classes,
             "statistics_from": "train split, 2-98 % clipped", **({"value_range": value_range} if value_range else {}),
             **({"split_from": "labels.csv split column"} if found.user_splits else {})}
    write_chipset(out_dir, found.subset("images", keep), found.subset("valid", keep), [{**row, "source": redact.path(str(row["source"]))} for row in rows], stats,
                  masks, boxes_for_chips(rows, source, cfg.chip_size))  # boxes from the source's real paths
    report = {"source": label, **outcome_report(found, len(rows), len(splits) - len(keep) - near.get("dropped", 0),
                                                counts, redact)}
    if near:
        report["near_duplicates"] = near
    if value_range:
        report["value_range"] = value_range
    report |= found.labels_csv | ({"split_from": "labels.csv split column"} if found.user_splits else {})
    (out_dir / "ingest_report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("ingested %d chips from %s: %s", len(rows), label, report["files"])
    return report


def _near_duplicate_links(found: IngestedChips, duplicates: DuplicatePolicy) -> np.ndarray | None:
    """``group``: each chip's near-duplicate set, from the chips as read (before a train-split value range maps
    them: the fingerprint ignores brightness and contrast), so the split can keep each set together."""
    if duplicates.mode != "group":
        return None
    store = found.scratch("fingerprints", np.float32)
    try:
        return near_duplicate_sets(fingerprints(found.images, found.valid, store), duplicates.similarity)
    finally:
        if store is not None:
            store.close()


def _grouped_summary(links: np.ndarray) -> dict[str, int]:
    sizes = np.bincount(links)
    return {"sets": int((sizes > 1).sum()), "chips": int(sizes[sizes > 1].sum())}


def _near_duplicates(found: IngestedChips, keep: list[int], rows: list[dict],
                     duplicates: DuplicatePolicy) -> tuple[list[int], list[dict], dict]:
    """Count near-duplicates across splits (the report's entry) and, with ``drop``, remove the val / test chips
    that have one in train; chip ids are renumbered so they stay positions in the cache."""
    if duplicates.mode == "off":
        return keep, rows, {}
    store = found.scratch("fingerprints", np.float32)
    try:
        near = find_near_duplicates(_kept_fingerprints(found, keep, store), [row["split"] for row in rows],
                                    [str(row["label"]) for row in rows], duplicates.similarity)
    finally:
        for values in (store, found.mapped_prints):
            if isinstance(values, SpilledArrays):
                values.close()
    dropped = int(near.in_train.sum()) if duplicates.mode == "drop" else 0
    if duplicates.mode == "group" and found.user_splits:
        return keep, rows, {**near.report(duplicates.similarity, 0),
                            "grouped": "not applied: the split comes from labels.csv"}
    if dropped:
        keep = [i for i, flagged in zip(keep, near.in_train) if not flagged]
        rows = [{**row, "chip_id": n} for n, row in enumerate(r for r, flagged in zip(rows, near.in_train)
                                                             if not flagged)]
    return keep, rows, near.report(duplicates.similarity, dropped)


def _kept_fingerprints(found: IngestedChips, keep: list[int],
                       store: SpilledArrays | None) -> np.ndarray | SpilledArrays:
    """The fingerprints of the chips at ``keep`` (ascending): those the value-range pass took as it mapped every
    chip (:meth:`IngestedChips.map_pending_ranges`), else taken now, into ``store`` when the chips are spilled."""
    if len(found.mapped_prints) != len(found.images):
        return fingerprints(found.subset("images", keep), found.subset("valid", keep), store)
    kept = np.zeros(len(found.images), bool)
    kept[keep] = True
    prints = keep_items(found.mapped_prints, kept.tolist())
    return prints if isinstance(prints, SpilledArrays) else \
        np.stack(prints) if prints else np.zeros((0, THUMBNAIL * THUMBNAIL), np.float32)


def check_user_split(rows: list[dict], units: list[str], split_kind: str, redact: PathRedactor) -> None:
    """A user's split must keep each patient (or spatial block) in one split, as the automatic one does.

    Raises:
        IngestError: one line naming the group (pseudonymised) and two of its files in different splits.
    """
    first: dict[str, tuple[str, str]] = {}
    what = "patient group" if split_kind == "group" else "spatial block"
    for row, unit in zip(rows, units):
        source, split = str(row["source"]), str(row["split"])
        seen = first.setdefault(unit, (source, split))
        if seen[1] != split:
            raise IngestError(f"labels.csv split column: {what} {redact.text(unit)!r} is in {seen[1]} "
                              f"({redact.path(seen[0])}) and {split} ({redact.path(source)}): give all of its "
                              "files one split, or drop the column for an automatic split")


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
