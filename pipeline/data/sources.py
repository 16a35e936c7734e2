"""One source file → its chips, or the one-line reason it was rejected or skipped.

Each kind of folder (DICOM, GeoTIFF, plain images) is a :class:`SourceKind` row in :data:`SOURCE_KINDS`:
how to list its files, how to read one and (DICOM) which files are label objects for the others. Reading a
file is a top-level function of one picklable :class:`FileTask`, so ingest can hand files to worker processes
and still merge results in a fixed order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import rasterio

from pipeline.config import DomainDataConfig
from pipeline.data.scenes import (
    GDAL_CACHE_BYTES, list_scenes, open_chip_labels, open_scene, to_unit_range, value_range,
)
from pipeline.data.segmentations import FolderLabels, find_dicom_labels
from pipeline.io import UnreadableImageError
from pipeline.io.dicom import GREYSCALE, HUWindow, NotAnImageError, is_dicom_file, iter_dicom_frames, window_stack

MASK_NODATA = 255
DEFAULT_SALT = "ssl-domain-transfer/v1"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
SIDE_FILES = {".csv", ".json", ".md", ".txt", ".geojson"}


@dataclass(frozen=True)
class FileTask:
    """Everything a worker needs to read one file (all picklable); a GeoTIFF band folder counts as one file."""

    path: Path
    relative: str
    source: Path
    cfg: DomainDataConfig
    labels: dict[str, str]
    class_names: list[str]
    salt: str
    domain: str = ""  # the ``data.<domain>`` key, named in configuration hints of rejection reasons
    # DICOM-SEG / RTSTRUCT class ids on the image's own grid by 1-based frame number (a frame not in it is
    # all background); None when no segmentation object references the file (pipeline.data.segmentations).
    frame_masks: dict[int, np.ndarray] | None = None


@dataclass
class FileChips:
    """What one file contributed: chips with manifest rows, or why it contributed none."""

    relative: str
    images: list[np.ndarray] = field(default_factory=list)  # each (C, S, S) float32 in [0, 1]
    valid: list[np.ndarray] = field(default_factory=list)  # each (S, S) bool
    rows: list[dict[str, object]] = field(default_factory=list)
    channel_names: list[str] = field(default_factory=list)
    masks: list[np.ndarray | None] = field(default_factory=list)  # per chip (S, S) uint8 class ids, 255 = ignore
    rejected: str = ""  # corrupt, truncated, unsupported: a problem the user should look at
    skipped: str = ""  # readable but not an image to train on (e.g. a structured report)
    dropped_low_valid: int = 0  # chips under the configured valid fraction
    spilled: str = ""  # images / valid moved to files by a helper process (pipeline.data.file_pool)


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


def read_mask_classes(source: Path) -> list[str]:
    """Segmentation class names by id from ``classes.json`` (``mask_classes``: {"0": "background", …})."""
    path = source / "classes.json"
    names = json.loads(path.read_text()).get("mask_classes", {}) if path.exists() else {}
    return [names[key] for key in sorted(names, key=int)]


def read_class_names(source: Path, labels: list[str]) -> list[str]:
    """Class order from ``classes.json`` (``image_classes``) when present, else sorted label names."""
    path = source / "classes.json"
    if path.exists():
        return list(json.loads(path.read_text())["image_classes"])
    return sorted({label for label in labels if label})


def resize_chip(channels: np.ndarray, valid: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) → (C, size, size) by area averaging; the valid mask by nearest neighbour."""
    if channels.shape[1:] == (size, size):
        return channels, valid
    if channels.shape[0] == 1:  # one plane (CT, X-ray): no channel-last copy
        chw = cv2.resize(channels[0], (size, size), interpolation=cv2.INTER_AREA)[None]
    else:
        hwc = cv2.resize(np.moveaxis(channels, 0, -1), (size, size), interpolation=cv2.INTER_AREA)
        chw = np.moveaxis(hwc.reshape(size, size, -1), -1, 0)
    if valid.all():  # no padding: the common case, cheaper than resizing a mask of ones
        mask = np.ones((size, size), bool)
    else:
        mask = cv2.resize(np.ascontiguousarray(valid).view(np.uint8), (size, size),
                          interpolation=cv2.INTER_NEAREST).astype(bool)
    return np.ascontiguousarray(chw, dtype=np.float32), mask


def read_file_safely(reader: Callable[[FileTask], FileChips], task: FileTask) -> FileChips:
    """Run one reader: a non-image object (SR, SEG, DICOMDIR …) is skipped, an unreadable file rejected,
    both with a one-line reason whose path is relative to the source."""
    try:
        return reader(task)
    except NotAnImageError as error:  # a subclass of UnreadableImageError: catch it first
        return FileChips(task.relative, skipped=_relative_reason(error, task))
    except UnreadableImageError as error:
        return FileChips(task.relative, rejected=_relative_reason(error, task))


def _relative_reason(error: Exception, task: FileTask) -> str:
    """The error's line with the file (and any side file, e.g. a label under masks/) relative to the source."""
    return str(error).replace(str(task.path), task.relative).replace(f"{task.source}/", "")


# --- DICOM -------------------------------------------------------------------------------------------

def list_dicom_files(source: Path) -> list[Path]:
    """Every file whose content is DICOM, whatever its extension (PACS exports often have none)."""
    return [p for p in sorted(source.rglob("*")) if p.is_file() and p.suffix.lower() not in SIDE_FILES
            and p.suffix.lower() != ".png" and is_dicom_file(p)]


def dicom_channel_names(cfg: DomainDataConfig) -> list[str]:
    return [f"window_c{w.center:g}_w{w.width:g}" for w in cfg.dicom.hu_windows]


def read_dicom_file(task: FileTask) -> FileChips:
    """One chip per frame: modality LUT → resized to ``chip_size`` in HU → HU windows as channels.

    Resizing comes before windowing: area-averaging HU values is physically meaningful (the mean
    attenuation of the larger pixel), the windows then map HU to display values exactly as for a native
    low-resolution scan, and the windows run on 64² instead of 512² pixels (3 × less work per window).

    Multi-frame and enhanced multi-frame objects give one chip per frame (each with its own rescale); a
    colour frame (secondary capture, screenshot) has no HU values to window and is skipped with a reason.
    Masks: see :func:`dicom_frame_mask`.
    """
    windows = [HUWindow(w.center, w.width) for w in task.cfg.dicom.hu_windows]
    out = FileChips(task.relative, channel_names=dicom_channel_names(task.cfg))
    for image in iter_dicom_frames(task.path):
        if image.source_photometric and image.source_photometric not in GREYSCALE:
            raise NotAnImageError(f"{task.path}: colour image ({image.source_photometric}): HU windows do not "
                                  "apply, skipped")
        values, valid = resize_chip(image.values[None].astype(np.float32, copy=False), image.valid,
                                    task.cfg.chip_size)
        out.images.append(window_stack(values[0], windows, invert=image.needs_inversion))
        out.valid.append(valid)
        out.rows.append({"source": task.relative, "frame": image.frame_index,
                         "group": pseudonymise(image.patient_key, task.salt), "label": task.labels.get(task.relative, "")})
        out.masks.append(dicom_frame_mask(task, image.frame_index, image.values.shape, valid))
    return out


def dicom_frame_mask(task: FileTask, frame_index: int, shape: tuple[int, ...],
                     valid: np.ndarray) -> np.ndarray | None:
    """The chip mask of one frame: from DICOM-SEG / RTSTRUCT when one references the file (they replace a PNG,
    see :mod:`pipeline.data.segmentations`), else from ``masks/<file>.png`` for the first frame, else None."""
    size = task.cfg.chip_size
    if task.frame_masks is None:
        png = task.source / "masks" / Path(task.relative).with_suffix(".png")
        return read_raster_mask(png, size, valid) if frame_index == 0 else None
    mask = task.frame_masks.get(frame_index + 1)
    if mask is None:
        return chip_mask(np.zeros(shape, np.uint8), size, valid)
    if mask.shape != tuple(shape):
        raise UnreadableImageError(f"{task.path}: frame {frame_index + 1} is {shape[0]}x{shape[1]} pixels, "
                                   f"its segmentation mask {mask.shape[0]}x{mask.shape[1]}")
    return chip_mask(mask, size, valid)


def read_raster_mask(path: Path, size: int, valid: np.ndarray) -> np.ndarray | None:
    """A class-id image (PNG / TIFF, same pixel grid as its image) → (size, size) uint8, 255 where invalid."""
    if not path.exists():
        return None
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2:
        raise UnreadableImageError(f"{path}: a mask must be a single-channel class-id image")
    return chip_mask(raw, size, valid)


def chip_mask(class_ids: np.ndarray, size: int, valid: np.ndarray) -> np.ndarray:
    """(H, W) class ids on the image grid → (size, size) uint8 by nearest neighbour (ids are not averaged),
    ``MASK_NODATA`` where the chip's ``valid`` mask is False."""
    mask = cv2.resize(class_ids.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    return np.where(valid, mask, MASK_NODATA).astype(np.uint8)


# --- GeoTIFF -----------------------------------------------------------------------------------------

def list_geotiff_files(source: Path) -> list[Path]:
    """Scenes below the source: band folders and multi-band files (:func:`pipeline.data.scenes.list_scenes`)."""
    return list_scenes(source)


def read_geotiff_file(task: FileTask) -> FileChips:
    """One scene (a multi-band file or a band folder) → a non-overlapping chip grid in [0, 1].

    Bands and the value range follow ``data.<domain>.geotiff`` (see :mod:`pipeline.data.scenes`). Label =
    dominant class of the scene's class raster or GeoJSON under ``masks/``, else its labels.csv row. GDAL's
    block cache is capped at ``GDAL_CACHE_BYTES`` while reading, in whichever process reads.
    """
    key = f"data.{task.domain or '<domain>'}.geotiff"
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        scene = open_scene(task.path, task.cfg.geotiff.bands, f"{key}.bands")
        low, high = value_range(scene, task.cfg.geotiff.value_range, f"{key}.value_range")
        labels = open_chip_labels(task.source, task.relative, scene, task.class_names)
        out = FileChips(task.relative, channel_names=list(scene.channel_names))
        for chip in scene.read_chips(task.cfg.chip_size):
            if chip.valid_fraction < task.cfg.geotiff.min_valid_fraction:
                out.dropped_low_valid += 1
                continue
            label, mask = task.labels.get(task.relative, ""), None
            if labels is not None:
                mask = np.where(chip.valid, labels.read(chip, task.cfg.chip_size), MASK_NODATA).astype(np.uint8)
                label = dominant_class(mask, labels.class_names)
            out.masks.append(mask)
            # [0, 1] is the augmentation space (reflectance > 1 is saturated cloud); standardised values
            # downstream are never clamped.
            out.images.append(to_unit_range(chip.data, chip.valid, low, high))
            out.valid.append(chip.valid)
            out.rows.append({"source": task.relative, "group": task.relative, "label": label, "row": chip.row,
                             "col": chip.col, "crs": scene.grid.crs,
                             "transform": " ".join(f"{v:.6f}" for v in chip.transform)})
    return out


def dominant_class(mask: np.ndarray, class_names: list[str]) -> str:
    values = mask[mask != MASK_NODATA]
    if values.size == 0:
        return ""
    return class_names[int(np.bincount(values.astype(np.int64)).argmax())]


# --- plain images (PNG / JPEG / TIFF) ----------------------------------------------------------------

def list_image_files(source: Path) -> list[Path]:
    return [p for p in sorted(source.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            and "masks" not in p.relative_to(source).parts]


def image_channel_names(channels: int) -> list[str]:
    return ["red", "green", "blue"] if channels == 3 else ["grey"]


def read_image_file(task: FileTask) -> FileChips:
    """One chip per image: 8/16-bit integers (or float) → [0, 1], alpha → valid mask, RGB or grey as configured."""
    raw = cv2.imread(str(task.path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise UnreadableImageError(f"{task.path}: not a readable PNG / JPEG / TIFF image")
    values, valid = _unit_range(raw, task.path)
    channels = _match_channels(values, task.cfg.image.channels)
    chip, valid = resize_chip(np.moveaxis(channels, -1, 0), valid, task.cfg.chip_size)
    label = task.labels.get(task.relative, "")
    if not label and not task.labels and task.cfg.image.label_from_folder and "/" in task.relative:
        label = Path(task.relative).parent.name
    row = {"source": task.relative, "group": task.relative, "label": label}
    mask = read_raster_mask(task.source / "masks" / Path(task.relative).with_suffix(".png"), task.cfg.chip_size, valid)
    return FileChips(task.relative, [chip], [valid], [row], image_channel_names(task.cfg.image.channels), [mask])


def _unit_range(raw: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(H, W[, C]) BGR(A) of any integer or float dtype → (H, W, C) RGB float32 in [0, 1] + alpha mask."""
    if np.issubdtype(raw.dtype, np.integer):
        values = raw.astype(np.float32) / np.iinfo(raw.dtype).max
    elif np.issubdtype(raw.dtype, np.floating):
        values = np.clip(np.nan_to_num(raw.astype(np.float32)), 0, 1)
    else:
        raise UnreadableImageError(f"{path}: pixel type {raw.dtype} is not supported")
    values = values[..., None] if values.ndim == 2 else values
    valid = values[..., 3] > 0 if values.shape[-1] == 4 else np.ones(values.shape[:2], bool)
    if values.shape[-1] in (3, 4):
        values = values[..., 2::-1]  # OpenCV's BGR(A) → RGB, alpha dropped
    return np.ascontiguousarray(values, dtype=np.float32), valid


def _match_channels(values: np.ndarray, channels: int) -> np.ndarray:
    """Grey → repeated to RGB; RGB → BT.601 luminance when one channel is asked for."""
    if values.shape[-1] == channels:
        return values
    if channels == 3:
        return np.repeat(values[..., :1], 3, axis=-1)
    return (values @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]


@dataclass(frozen=True)
class SourceKind:
    """How one kind of source folder is listed and read (a preset's ``reader`` names a row).

    ``find_labels`` (optional) runs once over the listed files before any is read: it sets label objects
    apart from images and gives each image its masks (``(source, files, mask_classes) → FolderLabels``).
    """

    list_files: Callable[[Path], list[Path]]
    read_file: Callable[[FileTask], FileChips]
    find_labels: Callable[[Path, list[Path], list[str]], FolderLabels] | None = None


SOURCE_KINDS: dict[str, SourceKind] = {
    "dicom": SourceKind(list_dicom_files, read_dicom_file, find_dicom_labels),
    "geotiff": SourceKind(list_geotiff_files, read_geotiff_file),
    "image": SourceKind(list_image_files, read_image_file),
}
