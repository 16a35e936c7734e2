"""Ingest: a folder of DICOM or GeoTIFF files → the decoded chip cache (see :mod:`pipeline.data.chips`).

Which reader and which split a domain uses comes from its preset (``READERS`` / ``SPLITTERS`` below),
never from the domain's name. Unreadable files are skipped with a one-line reason in
``ingest_report.json``; the rest of the folder is still ingested.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import DomainDataConfig
from pipeline.data.chips import channel_statistics, write_manifest
from pipeline.data.splits import check_no_leakage, group_split, spatial_block_split
from pipeline.io import UnreadableImageError
from pipeline.io.dicom import HUWindow, is_dicom_file, read_dicom, window_stack
from pipeline.io.geotiff import iter_chips, read_label_chip, read_scene_info
from pipeline.presets import DomainPreset

log = logging.getLogger(__name__)

MASK_NODATA = 255
DEFAULT_SALT = "ssl-domain-transfer/v1"
GEOTIFF_SUFFIXES = {".tif", ".tiff"}


@dataclass
class IngestedChips:
    """Everything ingest decoded from one source folder, before it is written."""

    images: list[np.ndarray] = field(default_factory=list)  # each (C, S, S) float32 in [0, 1]
    valid: list[np.ndarray] = field(default_factory=list)  # each (S, S) bool
    rows: list[dict[str, object]] = field(default_factory=list)
    channel_names: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)


def pseudonymise(key: str, salt: str) -> str:
    """Salted SHA-256 of a patient / study key; the raw value never leaves this function."""
    return hashlib.sha256(f"{salt}\x00{key}".encode()).hexdigest()[:16]


def phi_salt() -> str:
    """Sites set PIPELINE_PHI_SALT so their hashes cannot be reversed by hashing known IDs."""
    return os.environ.get("PIPELINE_PHI_SALT", DEFAULT_SALT)


def read_labels_csv(source: Path) -> dict[str, str]:
    """``labels.csv`` (columns ``path,label``; path relative to the source folder) → {path: label}."""
    path = source / "labels.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs the columns 'path,label', found {reader.fieldnames}")
        return {row["path"].strip(): row["label"].strip() for row in reader}


def read_class_names(source: Path, labels: list[str]) -> list[str]:
    """Class order from ``classes.json`` (``image_classes``) when present, else sorted label names."""
    path = source / "classes.json"
    if path.exists():
        return list(json.loads(path.read_text())["image_classes"])
    return sorted({label for label in labels if label})


def _resize(channels: np.ndarray, valid: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) → (C, size, size) by area averaging; the valid mask by nearest neighbour."""
    if channels.shape[1:] == (size, size):
        return channels, valid
    hwc = cv2.resize(np.moveaxis(channels, 0, -1), (size, size), interpolation=cv2.INTER_AREA)
    hwc = hwc.reshape(size, size, -1)
    mask = cv2.resize(valid.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return np.ascontiguousarray(np.moveaxis(hwc, -1, 0), dtype=np.float32), mask


def read_dicom_folder(source: Path, cfg: DomainDataConfig) -> IngestedChips:
    """One chip per DICOM slice: modality LUT → HU windows as channels → resized to ``chip_size``."""
    windows = [HUWindow(w.center, w.width) for w in cfg.dicom.hu_windows]
    labels = read_labels_csv(source)
    out = IngestedChips(channel_names=[f"window_c{w.center:g}_w{w.width:g}" for w in windows])
    out.classes = read_class_names(source, list(labels.values()))
    salt = phi_salt()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source).as_posix()
        if path.suffix.lower() in {".csv", ".json", ".png", ".md", ".txt"} or not is_dicom_file(path):
            continue
        try:
            image = read_dicom(path)
        except UnreadableImageError as error:
            out.rejected.append({"path": relative, "reason": str(error).replace(str(path), relative)})
            continue
        channels = window_stack(image.values, windows, invert=image.photometric == "MONOCHROME1")
        channels, valid = _resize(channels, image.valid, cfg.chip_size)
        out.images.append(channels)
        out.valid.append(valid)
        out.rows.append({"source": relative, "group": pseudonymise(image.patient_key, salt),
                         "label": labels.get(relative, "")})
    return out


def read_geotiff_folder(source: Path, cfg: DomainDataConfig) -> IngestedChips:
    """A non-overlapping chip grid per scene; label = dominant class of ``masks/<scene>`` or labels.csv."""
    labels = read_labels_csv(source)
    out = IngestedChips()
    scenes = sorted(p for p in source.rglob("*") if p.suffix.lower() in GEOTIFF_SUFFIXES
                    and "masks" not in p.relative_to(source).parts)
    for path in scenes:
        relative = path.relative_to(source).as_posix()
        try:
            info = read_scene_info(path)
            bands = cfg.geotiff.bands
            names = [info.band_names[b - 1] for b in bands] if bands else list(info.band_names)
            if out.channel_names and names != out.channel_names:
                raise UnreadableImageError(f"{path}: bands {names} differ from earlier scenes {out.channel_names}")
            out.channel_names = names
            _chip_scene(path, relative, source, cfg, labels, out, info)
        except UnreadableImageError as error:
            out.rejected.append({"path": relative, "reason": str(error).replace(str(path), relative)})
    out.classes = read_class_names(source, list(labels.values()) + [r["label"] for r in out.rows])
    return out


def _chip_scene(path, relative, source, cfg, labels, out: IngestedChips, info) -> None:
    mask_path = _mask_for(source, relative)
    class_names = read_class_names(source, []) if mask_path.exists() else []
    for chip in iter_chips(path, cfg.chip_size, cfg.geotiff.bands):
        if chip.valid.mean() < cfg.geotiff.min_valid_fraction:
            continue
        label = labels.get(relative, "")
        if mask_path.exists():
            label = _dominant_class(read_label_chip(mask_path, chip.row, chip.col, cfg.chip_size, scene=info), class_names)
        # [0, 1] is the augmentation space (reflectance > 1 is saturated cloud); standardised values
        # downstream are never clamped.
        out.images.append(np.clip(chip.data, 0.0, 1.0).astype(np.float32))
        out.valid.append(chip.valid)
        out.rows.append({"source": relative, "group": relative, "label": label, "row": chip.row, "col": chip.col,
                         "crs": info.crs, "transform": " ".join(f"{v:.6f}" for v in chip.transform)})


def _mask_for(source: Path, relative: str) -> Path:
    """``masks/<relative path>``, or ``masks/<file name>`` for a flat masks folder."""
    nested = source / "masks" / relative
    return nested if nested.exists() else source / "masks" / Path(relative).name


def _dominant_class(mask: np.ndarray, class_names: list[str]) -> str:
    values = mask[mask != MASK_NODATA]
    if values.size == 0:
        return ""
    return class_names[int(np.bincount(values.astype(np.int64)).argmax())]


READERS = {"dicom": read_dicom_folder, "geotiff": read_geotiff_folder}


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


def ingest_folder(source: Path, cfg: DomainDataConfig, preset: DomainPreset, seed: int, out_dir: Path) -> dict:
    """Decode, split, compute train-only statistics and write the chip cache into ``out_dir``."""
    if not source.is_dir():
        raise FileNotFoundError(f"data source {source} is not a folder")
    found = READERS[preset.reader](source, cfg)
    if not found.images:
        raise ValueError(f"{source}: no readable {preset.reader} images ({len(found.rejected)} rejected)")
    splits = SPLITTERS[preset.split](found.rows, cfg, seed)
    keep = [i for i, split in enumerate(splits) if split != "buffer"]
    rows = [{**found.rows[i], "split": str(splits[i]), "chip_id": n} for n, i in enumerate(keep)]
    check_no_leakage([LEAKAGE_UNITS[preset.split](row, cfg) for row in rows], [row["split"] for row in rows])
    images = np.stack([found.images[i] for i in keep]).astype(np.float32)
    valid = np.stack([found.valid[i] for i in keep])
    train = np.array([row["split"] == "train" for row in rows])
    mean, std = channel_statistics(images[train], valid[train])
    np.save(out_dir / "chips.npy", images)
    np.save(out_dir / "valid.npy", valid)
    write_manifest(out_dir / "manifest.csv", rows)
    counts = {split: dict(sorted(Counter(r["label"] or "<unlabelled>" for r in rows if r["split"] == split).items()))
              for split in ("train", "val", "test")}
    stats = {"channel_names": found.channel_names, "classes": found.classes, "mean": mean, "std": std,
             "chip_size": cfg.chip_size, "counts": counts, "statistics_from": "train split, 2-98 % clipped"}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    report = {"chips": len(rows), "buffer_chips_dropped": len(splits) - len(keep),
              "rejected_files": found.rejected, "counts": counts}
    (out_dir / "ingest_report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("ingested %d chips from %s (%d files rejected)", len(rows), source, len(found.rejected))
    return report
