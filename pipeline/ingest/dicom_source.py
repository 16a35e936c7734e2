"""DICOM files → chips, each modality read the way its values mean.

A preset's :class:`~pipeline.presets.DicomRecipe` names the modalities it reads and one row of
:data:`DICOM_INTENSITY`, which turns a decoded image into chip channels:

* ``hu_windows`` (CT): modality LUT → HU, resized in HU, then one channel per HU window.
* ``file_voi`` (CR, DX, MG, RF, XA, IO): modality LUT → the file's own VOI LUT (pydicom ``apply_voi_lut``: VOI
  LUT Sequence, or Window Center / Width with LINEAR, LINEAR_EXACT or SIGMOID) → else a robust window on the
  image's valid pixels → MONOCHROME1 inverted; ``dicom.xray_channels`` stacks several such windows.
* ``series_percentiles`` (MR): no physical unit, so values stay in modality units until the whole series is
  read, then map to [0, 1] by the series' own robust percentiles (:func:`normalise_deferred`): slices of one
  series keep their relative intensities. Siemens MOSAIC images are split into their slices.
* ``colour`` (US, ES, XC, SM, GM, OP, any colour object): RGB (YBR converted, palette applied by pydicom), grey
  repeated to three channels; pixels outside the ultrasound scan region are invalid
  (:mod:`pipeline.io.dicom_regions`).

Every image is resized with its aspect kept (:func:`~pipeline.ingest.sources.letterbox_chip`); pixels outside the
image or the scan region are 0 and invalid (CT keeps its windowed padding values, invalid). A file of a modality
the preset does not read is skipped with a reason naming the preset that reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config_data import DicomOptions, FileVoiChannel, PercentileChannel
from pipeline.ingest.phi import pseudonymise
from pipeline.ingest.sources import (
    SIDE_FILES, FileChips, FileTask, chip_mask, failed_file, letterbox_chip, read_raster_mask,
)
from pipeline.io import UnreadableImageError
from pipeline.io.dicom import (
    DicomHeader, DicomImage, HUWindow, is_dicom_file, open_dicom, percentile_window, read_identifiers, window_stack,
)
from pipeline.io.dicom_files import one_line
from pipeline.io.dicom_regions import constant_border_region, ultrasound_regions
from pipeline.io.dicom_voi import UnusableVOI, apply_file_voi
from pipeline.presets import PRESETS, DicomRecipe, dicom_preset_reading

ChipMaker = Callable[[DicomImage, DicomHeader, FileTask], tuple[np.ndarray, np.ndarray, str]]


def list_dicom_files(source: Path) -> list[Path]:
    """Every file whose content is DICOM, whatever its extension (PACS exports often have none), DICOMDIR
    indexes included so that they are counted (and skipped with their reason)."""
    return [p for p in sorted(source.rglob("*")) if p.is_file() and p.suffix.lower() not in SIDE_FILES
            and p.suffix.lower() != ".png" and is_dicom_file(p, include_dicomdir=True)]


def _percentile_text(percentiles: tuple[float, float]) -> str:
    return f"p{percentiles[0]:g}-p{percentiles[1]:g}"


# --- one function per intensity recipe: (image, header, task) → ((C, S, S) chip, (S, S) valid, description) ---

def _hu_windows_chip(image: DicomImage, header: DicomHeader, task: FileTask) -> tuple[np.ndarray, np.ndarray, str]:
    """Resize in HU first (area-averaging HU is physical: the mean attenuation of the larger pixel), then window:
    3 × less work per window than at full resolution."""
    windows = [HUWindow(w.center, w.width) for w in task.cfg.dicom.hu_windows]
    values, valid = letterbox_chip(image.values[None].astype(np.float32, copy=False), image.valid,
                                   task.cfg.chip_size)
    text = "HU windows " + ", ".join(f"L{w.center:g}/W{w.width:g}" for w in windows)
    return window_stack(values[0], windows, invert=image.needs_inversion), valid, text


def _xray_chip(image: DicomImage, header: DicomHeader, task: FileTask) -> tuple[np.ndarray, np.ndarray, str]:
    """VOI at full resolution (the LUT or sigmoid is non-linear: resizing after it is what a viewer shows)."""
    options, planes, texts = task.cfg.dicom, [], []
    for channel in options.xray_channels:
        plane, text = _xray_channel(image, header, channel, options)
        planes.append(plane)
        texts.append(text)
    stack = np.stack(planes)
    if image.needs_inversion:
        stack = 1.0 - stack
    stack[:, ~image.valid] = 0.0
    chip, valid = letterbox_chip(stack, image.valid, task.cfg.chip_size)
    return chip, valid, "; ".join(texts) + (", MONOCHROME1 inverted" if image.needs_inversion else "")


def _xray_channel(image: DicomImage, header: DicomHeader, channel: object,
                  options: DicomOptions) -> tuple[np.ndarray, str]:
    """One channel: a file VOI alternative (else the robust window, saying why), or a percentile window."""
    if isinstance(channel, PercentileChannel):
        return (percentile_window(image.values, image.valid, *channel.percentiles)[0],
                f"robust window {_percentile_text(channel.percentiles)}")
    number = options.voi_number if channel == "file_voi" else channel.voi
    fallback = f"robust window {_percentile_text(options.percentiles)}"
    try:
        found = apply_file_voi(image.values, header.dataset, image.frame_index, number)
    except UnusableVOI as error:
        found, fallback = None, f"{error}; {fallback}"
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as error:  # malformed module
        found, fallback = None, f"file VOI LUT unreadable ({one_line(error)}); {fallback}"
    else:
        fallback += " (no VOI LUT in file)"
    if found is not None:
        return found
    return percentile_window(image.values, image.valid, *options.percentiles)[0], fallback


def _mr_chip(image: DicomImage, header: DicomHeader, task: FileTask) -> tuple[np.ndarray, np.ndarray, str]:
    """Modality values, resized; mapped to [0, 1] later over the whole series (:func:`normalise_deferred`)."""
    chip, valid = letterbox_chip(image.values[None].astype(np.float32, copy=False), image.valid,
                                 task.cfg.chip_size)
    return chip, valid, f"series percentiles {_percentile_text(task.cfg.dicom.percentiles)}"


def _colour_chip(image: DicomImage, header: DicomHeader, task: FileTask) -> tuple[np.ndarray, np.ndarray, str]:
    rgb = image.values if image.values.ndim == 3 else np.repeat(image.values[..., None], 3, axis=-1)
    if image.sample_max:
        scaled, text = rgb / np.float32(image.sample_max), f"samples / {image.sample_max:g}"
    else:  # rescaled or signed grey: no fixed range
        percentiles = task.cfg.dicom.percentiles
        scaled = np.moveaxis(percentile_window(rgb[..., 0], image.valid, *percentiles), 0, -1).repeat(3, -1)
        text = f"robust window {_percentile_text(percentiles)}"
    if image.needs_inversion:
        scaled = 1.0 - scaled
    region, where = ultrasound_regions(header.dataset, image.valid.shape), "ultrasound regions"
    if region is None:
        region = constant_border_region(image.values, image.sample_max or float(np.max(image.values, initial=1)))
        where = "constant border removed" if region is not None else "no scan region or constant border found"
    valid = image.valid if region is None else image.valid & region
    scaled = np.where(valid[..., None], scaled, 0.0).astype(np.float32)
    chip, valid = letterbox_chip(np.ascontiguousarray(np.moveaxis(scaled, -1, 0)), valid, task.cfg.chip_size)
    return chip, valid, f"{'RGB' if image.values.ndim == 3 else 'grey as RGB'} {text}, {where}"


@dataclass(frozen=True)
class DicomIntensity:
    """One way DICOM values become chip channels (a row of :data:`DICOM_INTENSITY`).

    Attributes:
        channel_names: the chip's channel names from the domain's ``dicom`` options.
        chip: one decoded image → (chip, valid, description of the mapping).
        keep_colour: decode colour as RGB (else as BT.601 luminance).
        fast_header: read plain files with the fast header reader (only the attributes CT needs).
        deferred: chips leave the reader in modality units and are mapped per series in the main process.
    """

    channel_names: Callable[[DicomOptions], list[str]]
    chip: ChipMaker
    keep_colour: bool = False
    fast_header: bool = False
    deferred: bool = False


def _xray_channel_names(options: DicomOptions) -> list[str]:
    return ["voi_file" if channel == "file_voi" else f"voi_{channel.voi}" if isinstance(channel, FileVoiChannel)
            else f"window_{_percentile_text(channel.percentiles)}" for channel in options.xray_channels]


DICOM_INTENSITY: dict[str, DicomIntensity] = {
    "hu_windows": DicomIntensity(
        lambda o: [f"window_c{w.center:g}_w{w.width:g}" for w in o.hu_windows], _hu_windows_chip, fast_header=True),
    "file_voi": DicomIntensity(_xray_channel_names, _xray_chip),
    "series_percentiles": DicomIntensity(lambda o: ["mr_series"], _mr_chip, deferred=True),
    "colour": DicomIntensity(lambda o: ["red", "green", "blue"], _colour_chip, keep_colour=True),
}


def skip_reason(header: DicomHeader, task: FileTask, recipe: DicomRecipe) -> str:
    """Why this domain's preset does not read the file (naming the preset that does), or ``""``."""
    modalities = tuple(task.cfg.dicom.modalities or recipe.modalities)
    if header.is_colour and recipe.reads_colour:
        return ""
    if not header.is_colour and header.modality in modalities:
        return ""
    other = dicom_preset_reading(header.modality, header.is_colour)
    kind = f"colour image ({header.photometric})" if header.is_colour else f"modality {header.modality or '<none>'}"
    where = f"read by preset {other}" if other else "no preset reads it by default"
    key = f"data.{task.domain or '<domain>'}.dicom.modalities"
    return (f"{task.relative}: {kind}: {where}; this domain's preset {task.cfg.preset} reads "
            f"{', '.join(modalities)} ({key}), skipped")


def read_dicom_file(task: FileTask) -> FileChips:
    """One chip per frame (MOSAIC: per slice), mapped by the preset's intensity recipe; masks from DICOM-SEG /
    RTSTRUCT or ``masks/<file>.png`` (:func:`dicom_frame_mask`)."""
    recipe = PRESETS[task.cfg.preset].dicom
    if recipe is None:
        raise ValueError(f"preset {task.cfg.preset} does not read DICOM")
    intensity = DICOM_INTENSITY[recipe.intensity]
    try:
        header = open_dicom(task.path, fast_header=intensity.fast_header)
    except UnreadableImageError as error:  # its identifiers still redact its path, its modality is counted
        phi, modality = read_identifiers(task.path)
        return failed_file(task, error, phi=phi, modality=modality)
    out = FileChips(task.relative, channel_names=intensity.channel_names(task.cfg.dicom), modality=header.modality,
                    phi=header.phi)
    out.skipped = skip_reason(header, task, recipe)
    if out.skipped:
        return out
    try:
        _read_images(out, header, intensity, task)
    except UnreadableImageError as error:
        return failed_file(task, error, phi=header.phi, modality=header.modality)
    return out


def _read_images(out: FileChips, header: DicomHeader, intensity: DicomIntensity, task: FileTask) -> None:
    """Decode every frame (MOSAIC: slice) of the file into ``out``."""
    for image in header.images(keep_colour=intensity.keep_colour):
        chip, valid, out.intensity = intensity.chip(image, header, task)
        out.group_by = image.group_by
        out.images.append(chip)
        out.valid.append(valid)
        out.rows.append({"source": task.relative, "frame": image.frame_index,
                         "group": pseudonymise(image.patient_key or task.relative, task.salt),
                         "label": task.labels.get(task.relative, ""), "fit": "letterbox"})
        out.masks.append(dicom_frame_mask(task, image.frame_index, image.values.shape[:2], valid))
        if intensity.deferred:
            out.deferred_group = pseudonymise(image.series_key or task.relative, task.salt)
            out.invert = image.needs_inversion


def dicom_frame_mask(task: FileTask, frame_index: int, shape: tuple[int, ...],
                     valid: np.ndarray) -> np.ndarray | None:
    """The chip mask of one frame: from DICOM-SEG / RTSTRUCT when one references the file (they replace a PNG,
    see :mod:`pipeline.ingest.segmentations`), else from ``masks/<file>.png`` for the first frame, else None.
    Placed on the chip as its image was (aspect kept)."""
    size = task.cfg.chip_size
    if task.frame_masks is None:
        png = task.source / "masks" / Path(task.relative).with_suffix(".png")
        return read_raster_mask(png, size, valid, keep_aspect=True) if frame_index == 0 else None
    mask = task.frame_masks.get(frame_index + 1)
    if mask is None:
        return chip_mask(np.zeros(shape, np.uint8), size, valid, keep_aspect=True)
    if mask.shape != tuple(shape):
        raise UnreadableImageError(f"{task.path}: frame {frame_index + 1} is {shape[0]}x{shape[1]} pixels, "
                                   f"its segmentation mask {mask.shape[0]}x{mask.shape[1]}")
    return chip_mask(mask, size, valid, keep_aspect=True)


def normalise_deferred(images: list[np.ndarray], valid: list[np.ndarray], groups: list[tuple[str, bool]],
                       percentiles: tuple[float, float]) -> None:
    """Map deferred chips to [0, 1] in place, by the robust percentiles of all valid pixels of their group.

    Args:
        images: (C, S, S) chips; those with a group hold modality values.
        valid: (S, S) masks.
        groups: per chip (hashed group, MONOCHROME1), ``("", False)`` for chips already in [0, 1].
        percentiles: (low, high) in percent.
    """
    members: dict[str, list[int]] = {}
    for index, (group, _) in enumerate(groups):
        if group:
            members.setdefault(group, []).append(index)
    for indexes in members.values():
        pixels = np.concatenate([images[i][:, valid[i]].ravel() for i in indexes])
        low, high = np.percentile(pixels, percentiles) if pixels.size else (0.0, 0.0)
        for i in indexes:
            mapped = np.clip((images[i] - low) / (high - low), 0, 1) if high > low else np.zeros_like(images[i])
            mapped = 1.0 - mapped if groups[i][1] else mapped
            images[i] = np.where(valid[i], mapped, 0.0).astype(np.float32)
