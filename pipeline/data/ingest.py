"""Ingest: a folder of DICOM or GeoTIFF files → the decoded chip cache (see :mod:`pipeline.data.chips`).

Which reader and which split a domain uses comes from its preset (:data:`pipeline.data.sources.SOURCE_KINDS`,
``SPLITTERS`` below), never from the domain's name. A corrupt, truncated or unsupported file is rejected with a
one-line reason in the outcome report and the rest of the folder is still ingested (``ingest.strict`` stops at
the first one instead). Files are read by ``ingest.workers`` processes and merged in sorted order, so the cache
does not depend on the number of workers.

DICOM-SEG and RTSTRUCT objects are labels, not images: a first pass in the main process
(:mod:`pipeline.data.segmentations`) turns them into masks that travel with the tasks of the images they
reference, and the report counts them under ``files.labels`` with one ``labels`` entry each.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.config import DomainDataConfig
from pipeline.data.boxes import write_box_cache
from pipeline.data.chips import channel_statistics, write_manifest
from pipeline.data.file_pool import read_in_order
from pipeline.data.segmentations import FolderLabels
from pipeline.data.sources import (
    MASK_NODATA, SOURCE_KINDS, FileChips, FileTask, phi_salt, read_class_names, read_file_safely, read_labels_csv,
    read_mask_classes,
)
from pipeline.data.splits import check_no_leakage, group_split, spatial_block_split
from pipeline.presets import DomainPreset

log = logging.getLogger(__name__)

class IngestError(ValueError):
    """``ingest.strict``: the first bad file stops the run; the message is that file's one line."""


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
    rejected: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    labels: list[dict[str, object]] = field(default_factory=list)  # DICOM-SEG / RTSTRUCT used as masks
    files_seen: int = 0
    files_ingested: int = 0
    chips_dropped_low_valid: int = 0

    def add(self, result: FileChips) -> None:
        """Merge one file's result; a file whose channels differ from the first file's is rejected."""
        if result.images and self.channel_names and result.channel_names != self.channel_names:
            result = FileChips(result.relative, rejected=f"{result.relative}: channels {result.channel_names} "
                               f"differ from earlier files {self.channel_names}")
        if result.rejected or result.skipped:
            outcome = self.rejected if result.rejected else self.skipped
            outcome.append({"path": result.relative, "reason": result.rejected or result.skipped})
            return
        self.channel_names = self.channel_names or result.channel_names
        self.files_ingested += 1
        self.images += result.images
        self.valid += result.valid
        self.rows += result.rows
        self.masks += result.masks or [None] * len(result.images)
        self.chips_dropped_low_valid += result.dropped_low_valid

    def add_label_objects(self, found: FolderLabels, strict: bool) -> None:
        """Merge the first pass's outcomes; ``strict`` stops at the first (by path) unusable label object."""
        bad = sorted(found.rejected + found.skipped, key=lambda line: line["path"])
        if strict and bad:
            raise IngestError(bad[0]["reason"])
        self.rejected += found.rejected
        self.skipped += found.skipped
        self.labels += found.used


def read_folder(source: Path, cfg: DomainDataConfig, reader: str, workers: int = 1, strict: bool = False,
                domain: str = "") -> IngestedChips:
    """Read every file of one kind below ``source``, in sorted order whatever the number of workers."""
    kind = SOURCE_KINDS[reader]
    labels = read_labels_csv(source)
    class_names = read_class_names(source, list(labels.values()))
    salt = phi_salt()
    files = kind.list_files(source)
    mask_classes = read_mask_classes(source)
    found = kind.find_labels(source, files, mask_classes) if kind.find_labels else FolderLabels(files)
    tasks = [FileTask(path, path.relative_to(source).as_posix(), source, cfg, labels, class_names, salt,
                      domain, found.frame_masks.get(path)) for path in found.images]
    out = IngestedChips(files_seen=len(files), mask_classes=found.mask_classes or mask_classes)
    out.add_label_objects(found, strict)
    for result in read_in_order(partial(read_file_safely, kind.read_file), tasks, workers):
        if strict and (result.rejected or result.skipped):
            raise IngestError(result.rejected or result.skipped)
        out.add(result)
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
                  workers: int = 1, strict: bool = False, domain: str = "") -> dict:
    """Decode, split, compute train-only statistics and write the chip cache into ``out_dir``.

    Returns the outcome report (also written as ``ingest_report.json``): files seen / ingested / rejected /
    skipped, one ``{path, reason}`` line per rejected or skipped file, chips kept and dropped, label counts.
    ``domain`` is named in reasons that point at a config key (``data.<domain>.geotiff.value_range``).
    """
    if not source.is_dir():
        raise FileNotFoundError(f"data source {source} is not a folder")
    found = read_folder(source, cfg, preset.reader, workers, strict, domain)
    if not found.images:
        raise ValueError(f"{source}: no readable {preset.reader} images "
                         f"({len(found.rejected)} rejected, {len(found.skipped)} skipped of {found.files_seen} files)")
    splits = SPLITTERS[preset.split](found.rows, cfg, seed)
    keep = [i for i, split in enumerate(splits) if split != "buffer"]
    rows = [{**found.rows[i], "split": str(splits[i]), "chip_id": n} for n, i in enumerate(keep)]
    check_no_leakage([LEAKAGE_UNITS[preset.split](row, cfg) for row in rows], [row["split"] for row in rows])
    images = np.stack([found.images[i] for i in keep]).astype(np.float32, copy=False)
    valid = np.stack([found.valid[i] for i in keep])
    train = np.array([row["split"] == "train" for row in rows])
    mean, std = channel_statistics(images[train], valid[train])
    np.save(out_dir / "chips.npy", images)
    np.save(out_dir / "valid.npy", valid)
    write_manifest(out_dir / "manifest.csv", rows)
    mask_classes = _write_masks(out_dir, [found.masks[i] for i in keep], cfg.chip_size, found.mask_classes)
    write_box_cache(out_dir, rows, source, cfg.chip_size)  # COCO boxes.json of the source, if any
    counts = {split: dict(sorted(Counter(r["label"] or "<unlabelled>" for r in rows if r["split"] == split).items()))
              for split in ("train", "val", "test")}
    stats = {"channel_names": found.channel_names, "classes": found.classes, "mean": mean, "std": std,
             "chip_size": cfg.chip_size, "counts": counts, "mask_classes": mask_classes, "statistics_from": "train split, 2-98 % clipped"}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    report = outcome_report(found, len(rows), len(splits) - len(keep), counts)
    (out_dir / "ingest_report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("ingested %d chips from %s: %s", len(rows), source, report["files"])
    return report


def _write_masks(out_dir: Path, masks: list[np.ndarray | None], size: int,
                 mask_classes: list[str]) -> list[str]:
    """``masks.npy`` (N, S, S) uint8 when any chip has a mask; chips without one are all 255 (ignored)."""
    if all(mask is None for mask in masks):
        return []
    ignore = np.full((size, size), MASK_NODATA, np.uint8)
    np.save(out_dir / "masks.npy", np.stack([ignore if mask is None else mask for mask in masks]))
    return mask_classes


def outcome_report(found: IngestedChips, chips: int, buffer_dropped: int, counts: dict) -> dict:
    """Counts of every outcome (seen = ingested + rejected + skipped + labels), then one line per file that
    gave no chips and why, and one entry per segmentation object used as labels."""
    return {
        "files": {"seen": found.files_seen, "ingested": found.files_ingested, "rejected": len(found.rejected),
                  "skipped": len(found.skipped), "labels": len(found.labels)},
        "chips": {"kept": chips, "dropped_low_valid_fraction": found.chips_dropped_low_valid,
                  "dropped_split_buffer": buffer_dropped},
        "rejected": found.rejected,
        "skipped": found.skipped,
        "labels": found.labels,
        "counts": counts,
    }
