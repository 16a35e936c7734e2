"""One source file → its chips, or the one-line reason it was rejected or skipped.

The parts every reader shares (the picklable :class:`FileTask` and :class:`FileChips`, labels and classes, chip
resizing, masks, the constant-chip rule) and the plain-image reader; DICOM is :mod:`pipeline.ingest.dicom_source`,
GeoTIFF :mod:`pipeline.ingest.geotiff_source`, and :mod:`pipeline.ingest.source_kinds` lists which reader a preset
uses.
Reading a file is a top-level function of one :class:`FileTask`, so ingest can hand files to worker processes
and still merge results in a fixed order.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline.config_data import DomainDataConfig
from pipeline.ingest.value_ranges import ClipCounts
from pipeline.data.chips import MASK_IGNORE, valid_pixels
from pipeline.ingest.spill import close_spilled, keep_items, spilled_lists
from pipeline.io import UnreadableImageError
from pipeline.io.dicom_files import NotAnImageError
from pipeline.presets import PRESETS

CONSTANT_SPREAD = 1e-3  # 1st–99th percentile spread in [0, 1] under which a chip channel is constant
CONSTANT_SAMPLES = 256  # valid pixels per channel the constant rule looks at (a regular subsample)
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
    # all background); None when no segmentation object references the file (pipeline.ingest.segmentations).
    frame_masks: dict[int, np.ndarray] | None = None
    # GeoTIFF: the bands this scene gives and the domain's channel names, settled from every scene's header
    # before reading (pipeline.ingest.geotiff_source.plan_scenes); None = data.<domain>.geotiff.bands as is
    bands: tuple[int | str, ...] | None = None
    channel_names: tuple[str, ...] | None = None
    # where a reader keeps a file's chips instead of in memory when they would take more than spill_above bytes
    # ("" = always in memory; pipeline.ingest.spill)
    spill_dir: str = ""
    spill_above: int = 0


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
    dropped_constant: int = 0  # chips whose valid pixels are constant after the intensity mapping
    spilled: str = ""  # images / valid moved to files by a helper process (pipeline.ingest.file_pool)
    intensity: str = ""  # how values became channels, e.g. "HU windows L40/W400, …" (reasons, report counts)
    modality: str = ""  # DICOM Modality of the file ("" for other readers, or when unreadable)
    group_by: str = ""  # DICOM: which key grouped the file (patient, study, series, file)
    phi: tuple[str, ...] = ()  # raw patient identifiers of the file, only to redact paths; never written
    no_chip_reason: str = ""  # a reader's own reason when a readable file gives no chip (scene too small)
    # chips still in modality units, to be mapped to [0, 1] over all chips of this (hashed) group, e.g. an MR
    # series (pipeline.ingest.dicom_source.normalise_deferred); "" = already in [0, 1]
    deferred_group: str = ""
    invert: bool = False  # MONOCHROME1, for deferred chips: inverted once mapped
    # GeoTIFF chips still in physical units, to be mapped to [0, 1] by the range fitted on the train split's
    # chips of the same group (stored type and scale: pipeline.ingest.value_ranges); "" = already mapped
    range_group: str = ""
    clip_counts: ClipCounts = field(default_factory=ClipCounts)  # pixels clipped by a configured range

    def keep_chips(self, keep: list[bool]) -> None:
        """Drop the chips (with their rows and masks) where ``keep`` is False."""
        for name in ("images", "valid", "rows", "masks"):
            values = getattr(self, name)
            if len(values) == len(keep):
                setattr(self, name, keep_items(values, keep))

    def spill_to(self, folder: Path) -> None:
        """Keep this file's chips in files below ``folder`` as they are added (a scene too large to hold)."""
        vars(self).update(spilled_lists(folder))

    def close_spill(self) -> None:
        """Delete the spilled chips (once merged), if any."""
        close_spilled(self.images, self.valid, self.masks)

    def drop_constant_chips(self) -> None:
        """Apply the constant-chip rule (:func:`constant_chips`) and count what it dropped."""
        constant = constant_chips(self.images, self.valid)
        if any(constant):
            self.dropped_constant += sum(constant)
            self.keep_chips([not flag for flag in constant])


def constant_chips(images: list[np.ndarray], valid: list[np.ndarray]) -> list[bool]:
    """True for each chip whose valid pixels are (near-)constant in every channel after normalisation.

    A blank radiograph (every pixel below the window), a saturated one, or a SAR scene mapped with the wrong
    range carries no signal; trained on, it teaches SimCLR that blank matches blank. "Near-constant": the spread
    between the 1st and 99th percentile of every channel's valid pixels is under :data:`CONSTANT_SPREAD` (a
    thousandth of the [0, 1] range), so a few hot pixels or a thin edge do not rescue a blank chip. A regular
    subsample of :data:`CONSTANT_SAMPLES` valid pixels per channel clears most chips cheaply (exact percentiles
    of every pixel cost 15 % of a CT ingest); a chip the subsample finds constant is checked on all its pixels
    before it is called constant, so a thin stripe or a small object between the sampled pixels still counts.
    A chip without valid pixels is constant.
    """
    flags = []
    for image, mask in zip(images, valid):
        pixels = valid_pixels(image, mask)
        if pixels.shape[1] == 0:
            flags.append(True)
            continue
        sampled = pixels[:, ::max(1, pixels.shape[1] // CONSTANT_SAMPLES)]
        flags.append(_spread_below(sampled) and _spread_below(pixels))
    return flags


def _spread_below(pixels: np.ndarray) -> bool:
    """Whether every row of (C, P) ``pixels`` has its 1st–99th percentile spread under CONSTANT_SPREAD."""
    low, high = int(0.01 * (pixels.shape[1] - 1)), int(np.ceil(0.99 * (pixels.shape[1] - 1)))
    ordered = np.partition(pixels, (low, high), axis=1)
    return bool((ordered[:, high] - ordered[:, low]).max() < CONSTANT_SPREAD)


def read_mask_classes(source: Path) -> list[str]:
    """Segmentation class names by id from ``classes.json`` (``mask_classes``: {"0": "background", …})."""
    path = source / "classes.json"
    names = json.loads(path.read_text()).get("mask_classes", {}) if path.exists() else {}
    return [names[key] for key in sorted(names, key=int)]


def read_class_names(source: Path, labels: list[str]) -> list[str]:
    """Class order from ``classes.json`` (``image_classes``) when present, else sorted label names."""
    path = source / "classes.json"
    named = json.loads(path.read_text()).get("image_classes") if path.exists() else None
    if named is not None:
        return list(named)
    return sorted({label for label in labels if label})  # also when classes.json names only mask classes


def resize_chip(channels: np.ndarray, valid: np.ndarray, size: int,
                height: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) → (C, height or size, size) by area averaging; the valid mask by nearest neighbour."""
    height = size if height is None else height
    if channels.shape[1:] == (height, size):
        return channels, valid
    if channels.shape[0] == 1:  # one plane (CT, X-ray): no channel-last copy
        chw = cv2.resize(channels[0], (size, height), interpolation=cv2.INTER_AREA)[None]
    else:
        hwc = cv2.resize(np.moveaxis(channels, 0, -1), (size, height), interpolation=cv2.INTER_AREA)
        chw = np.moveaxis(hwc.reshape(height, size, -1), -1, 0)
    if valid.all():  # no padding: the common case, cheaper than resizing a mask of ones
        mask = np.ones((height, size), bool)
    else:
        mask = cv2.resize(np.ascontiguousarray(valid).view(np.uint8), (size, height),
                          interpolation=cv2.INTER_NEAREST).astype(bool)
    return np.ascontiguousarray(chw, dtype=np.float32), mask


def letterbox_chip(channels: np.ndarray, valid: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) → (C, size, size) keeping the aspect ratio: the longer side becomes ``size``, the image is
    centred, and the padding is 0 and invalid. A square image is exactly :func:`resize_chip`.

    Radiographs, mammograms and ultrasound frames are not square; stretching them would change every
    anatomical proportion the network could learn from."""
    height, width = channels.shape[1:]
    if height == width:
        return resize_chip(channels, valid, size)
    scale = size / max(height, width)
    inner_h, inner_w = max(1, round(height * scale)), max(1, round(width * scale))
    inner, inner_valid = resize_chip(channels, valid, inner_w, height=inner_h)
    top, left = (size - inner_h) // 2, (size - inner_w) // 2
    out = np.zeros((channels.shape[0], size, size), np.float32)
    mask = np.zeros((size, size), bool)
    out[:, top:top + inner_h, left:left + inner_w] = inner
    mask[top:top + inner_h, left:left + inner_w] = inner_valid
    return out, mask


def read_file_safely(reader: Callable[[FileTask], FileChips], task: FileTask) -> FileChips:
    """Run one reader: a non-image object (SR, SEG, DICOMDIR …) is skipped, an unreadable file rejected,
    both with a one-line reason whose path is relative to the source; constant chips are dropped
    (:func:`constant_chips`), except deferred ones, which are checked once their group is mapped."""
    try:
        chips = reader(task)
    except UnreadableImageError as error:
        return failed_file(task, error)
    if not chips.deferred_group and not chips.range_group:
        chips.drop_constant_chips()
    return chips


def failed_file(task: FileTask, error: UnreadableImageError, **known: object) -> FileChips:
    """The result of a file that gave nothing: *skipped* for a non-image object (SR, SEG, DICOMDIR …), else
    *rejected*, with the one-line reason relative to the source; ``known`` keeps what was read before the failure
    (``phi``, ``modality``)."""
    reason = _relative_reason(error, task)
    outcome = {"skipped": reason} if isinstance(error, NotAnImageError) else {"rejected": reason}
    return FileChips(task.relative, **outcome, **known)


def _relative_reason(error: Exception, task: FileTask) -> str:
    """The error's line with the file (and any side file, e.g. a label under masks/) relative to the source."""
    return str(error).replace(str(task.path), task.relative).replace(f"{task.source}/", "")


def read_raster_mask(path: Path, size: int, valid: np.ndarray, keep_aspect: bool = False) -> np.ndarray | None:
    """A class-id image (PNG / TIFF, same pixel grid as its image) → (size, size) uint8, 255 where invalid."""
    if not path.exists():
        return None
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2:
        raise UnreadableImageError(f"{path}: a mask must be a single-channel class-id image")
    return chip_mask(raw, size, valid, keep_aspect)


def chip_mask(class_ids: np.ndarray, size: int, valid: np.ndarray, keep_aspect: bool = False) -> np.ndarray:
    """(H, W) class ids on the image grid → (size, size) uint8 by nearest neighbour (ids are not averaged),
    ``MASK_IGNORE`` where the chip's ``valid`` mask is False; ``keep_aspect`` places it as
    :func:`letterbox_chip` places its image."""
    height, width = class_ids.shape
    inner_h, inner_w = size, size
    if keep_aspect and height != width:
        scale = size / max(height, width)
        inner_h, inner_w = max(1, round(height * scale)), max(1, round(width * scale))
    mask = np.full((size, size), MASK_IGNORE, np.uint8)
    top, left = (size - inner_h) // 2, (size - inner_w) // 2
    mask[top:top + inner_h, left:left + inner_w] = cv2.resize(class_ids.astype(np.uint8), (inner_w, inner_h),
                                                              interpolation=cv2.INTER_NEAREST)
    return np.where(valid, mask, MASK_IGNORE).astype(np.uint8)


# --- plain images (PNG / JPEG / TIFF) ----------------------------------------------------------------

def list_image_files(source: Path) -> list[Path]:
    return [p for p in sorted(source.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            and "masks" not in p.relative_to(source).parts]


def image_channels(cfg: DomainDataConfig) -> int:
    """The channels an image folder gives: ``image.channels`` if set, else what the preset's recipe is for."""
    return cfg.image.channels or PRESETS[cfg.preset].image_channels or 3


def image_channel_names(channels: int) -> list[str]:
    return ["red", "green", "blue"] if channels == 3 else ["grey"]


def read_image_file(task: FileTask) -> FileChips:
    """One chip per image: 8/16-bit integers (or float) → [0, 1], alpha → valid mask, RGB or grey as configured."""
    raw = cv2.imread(str(task.path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise UnreadableImageError(f"{task.path}: not a readable PNG / JPEG / TIFF image")
    values, valid = _unit_range(raw, task.path)
    count = image_channels(task.cfg)
    channels = _match_channels(values, count)
    chip, valid = resize_chip(np.moveaxis(channels, -1, 0), valid, task.cfg.chip_size)
    label = task.labels.get(task.relative, "")
    if not label and not task.labels and task.cfg.image.label_from_folder and "/" in task.relative:
        label = Path(task.relative).parent.name
    row = {"source": task.relative, "group": task.relative, "label": label}
    mask = read_raster_mask(task.source / "masks" / Path(task.relative).with_suffix(".png"), task.cfg.chip_size, valid)
    return FileChips(task.relative, [chip], [valid], [row], image_channel_names(count), [mask],
                     intensity=f"{raw.dtype} samples -> [0, 1]")


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
