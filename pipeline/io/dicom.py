"""DICOM file → float image in modality units + valid-pixel mask + grouping metadata.

Pixel pipeline (DOMAIN.md §3), split between two steps so that one decoded image can be windowed several ways:

1. :func:`read_dicom`: decode (``ds.pixel_array``; compressed transfer syntaxes through the pylibjpeg plugins)
   → **modality LUT** (``pydicom.pixels.apply_modality_lut``: RescaleSlope/Intercept, so CT becomes HU)
   → **PixelPaddingValue** mask (compared with the *stored* values, as the standard defines it).
2. :func:`window_stack` (CT: one HU window per channel) or :func:`percentile_window` (X-ray, MR)
   → values in [0, 1] → **MONOCHROME1 inversion**.

MONOCHROME1 policy: :func:`read_dicom` never inverts. ``DicomImage.values`` stay in modality units (for
MONOCHROME1, low stored values are displayed *bright*), so HU and other physical values keep their meaning and
windows stay comparable between files. The windowing functions take ``invert``; the caller sets it from
``DicomImage.needs_inversion`` (``photometric == "MONOCHROME1"``). After windowing, 1.0 is therefore always
"bright / dense" whatever the file's photometric interpretation.

Only single-frame greyscale images are supported for now: multi-frame objects and colour images raise
:class:`~pipeline.io.UnreadableImageError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from pipeline.io import UnreadableImageError

log = logging.getLogger(__name__)

GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
_PREAMBLE_BYTES = 128
_MAGIC = b"DICM"


@dataclass(frozen=True)
class HUWindow:
    """A VOI window in modality units (HU for CT).

    Attributes:
        center: window centre (DICOM WindowCenter), e.g. 40 HU for soft tissue.
        width: window width (DICOM WindowWidth), ≥ 1 as the DICOM LINEAR function requires, e.g. 400 HU.
    """

    center: float
    width: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.center) or not np.isfinite(self.width) or self.width < 1:
            raise ValueError(f"HU window needs a finite center and a width >= 1, "
                             f"got {self.center}/{self.width}")


@dataclass(frozen=True)
class DicomImage:
    """One decoded greyscale DICOM image.

    Attributes:
        values: (H, W) float32 after the modality LUT (HU for CT), *not* inverted for MONOCHROME1 and not
            windowed (see the module docstring).
        valid: (H, W) bool, False at PixelPaddingValue pixels (or inside the padding range when
            PixelPaddingRangeLimit is present).
        photometric: PhotometricInterpretation, ``MONOCHROME1`` or ``MONOCHROME2``.
        modality: Modality (``CT``, ``CR``, ``MR`` …), ``""`` when absent.
        patient_key: raw PatientID, else PatientName, else StudyInstanceUID. PHI: the caller hashes it and
            must never log or write it.
        study_key: raw StudyInstanceUID, ``""`` when absent (PHI-adjacent: hash before writing).
        pixel_spacing_mm: (row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing (detector
            plane, for projection X-ray), else None.
    """

    values: np.ndarray
    valid: np.ndarray
    photometric: str
    modality: str
    patient_key: str
    study_key: str
    pixel_spacing_mm: tuple[float, float] | None

    @property
    def needs_inversion(self) -> bool:
        """True for MONOCHROME1: pass it as ``invert`` to the windowing functions."""
        return self.photometric == "MONOCHROME1"


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file, by its 128-byte preamble + ``DICM`` magic, not its extension.

    Many archives store DICOM without a ``.dcm`` suffix. Files without the preamble (old ACR-NEMA streams)
    are not recognised. Unreadable paths and folders return False.
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(_PREAMBLE_BYTES + len(_MAGIC))
    except OSError:
        return False
    return head[_PREAMBLE_BYTES:] == _MAGIC


def read_dicom(path: Path) -> DicomImage:
    """Decode one single-frame greyscale DICOM file into modality values, a valid mask and grouping keys.

    Args:
        path: a DICOM Part 10 file, any transfer syntax pydicom + pylibjpeg can decode.

    Returns:
        The image; ``values`` is (H, W) float32 in modality units (HU for CT).

    Raises:
        UnreadableImageError: not DICOM, truncated, no pixel data, undecodable transfer syntax, colour or
            multi-frame image, or no key to group the image by patient. The message names the file.
    """
    path = Path(path)
    ds = _read_dataset(path)
    photometric = _check_greyscale_single_frame(ds, path)
    stored = _decode(ds, path)
    values = _modality_values(stored, ds, path)
    return DicomImage(
        values=values,
        valid=padding_mask(stored, ds),
        photometric=photometric,
        modality=str(ds.get("Modality", "") or ""),
        patient_key=_patient_key(ds, path),
        study_key=str(ds.get("StudyInstanceUID", "") or ""),
        pixel_spacing_mm=_pixel_spacing(ds),
    )


def _read_dataset(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except FileNotFoundError as error:
        raise UnreadableImageError(f"{path}: file not found") from error
    except Exception as error:  # pydicom raises many types for corrupt input; one error type for callers
        reason = f"{type(error).__name__}: {error}"
        raise UnreadableImageError(f"{path}: not a readable DICOM file ({reason})") from error


def _check_greyscale_single_frame(ds: Dataset, path: Path) -> str:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnreadableImageError(f"{path}: DICOM file has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric not in GREYSCALE or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        found = photometric or "<missing>"
        raise UnreadableImageError(f"{path}: unsupported photometric interpretation {found}"
                                   " (only MONOCHROME1/MONOCHROME2 for now)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise UnreadableImageError(f"{path}: multi-frame DICOM ({frames} frames) is not supported yet")
    return photometric


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    try:
        stored = ds.pixel_array
    except Exception as error:  # missing plugin, truncated or corrupt codestream: one error type for callers
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
        raise UnreadableImageError(f"{path}: cannot decode pixel data ({name}): {error}") from error
    if stored.ndim != 2:
        raise UnreadableImageError(f"{path}: expected one 2-D greyscale frame, decoded shape {stored.shape}")
    return stored


def _modality_values(stored: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    try:
        values = apply_modality_lut(stored, ds)
    except Exception as error:  # malformed Modality LUT Sequence / rescale values
        raise UnreadableImageError(f"{path}: cannot apply the modality LUT: {error}") from error
    return np.ascontiguousarray(values, dtype=np.float32)


def padding_mask(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Valid-pixel mask from PixelPaddingValue / PixelPaddingRangeLimit, on the *stored* values.

    The standard (PS3.3 C.7.5.1.1.2) defines padding in stored-value units, before the modality LUT, so the
    comparison is done there. With a range limit, every value between the two (inclusive, either order) is
    padding.

    Args:
        stored: (H, W) decoded stored values (``ds.pixel_array``).
        ds: the dataset the values came from.

    Returns:
        (H, W) bool, False at padding pixels; all True when the file declares no padding.
    """
    padding = ds.get("PixelPaddingValue")
    if padding is None:
        return np.ones(stored.shape, dtype=bool)
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None:
        return stored != padding
    low, high = min(padding, limit), max(padding, limit)
    return (stored < low) | (stored > high)


def _patient_key(ds: Dataset, path: Path) -> str:
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            return value
    raise UnreadableImageError(f"{path}: no PatientID, PatientName or StudyInstanceUID to group the image by")


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = ds.get(keyword)
        if spacing is not None and len(spacing) == 2:
            return float(spacing[0]), float(spacing[1])
    return None


def _linear_window(values: np.ndarray, window: HUWindow) -> np.ndarray:
    """DICOM LINEAR VOI function (PS3.3 C.11.2.1.2.1) with output range [0, 1].

    The standard's piecewise definition (``y_min`` below ``c - 0.5 - (w - 1) / 2``, ``y_max`` above
    ``c - 0.5 + (w - 1) / 2``, linear between) is exactly the clipped line below; width 1 is a step at
    ``c - 0.5``.
    """
    center = window.center - 0.5
    if window.width == 1:
        return (values > center).astype(np.float32)
    scaled = (values.astype(np.float64) - center) / (window.width - 1) + 0.5
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def window_stack(values: np.ndarray, windows: Sequence[HUWindow], invert: bool = False) -> np.ndarray:
    """Stack several VOI windows of one image as channels (CT: lung, soft tissue, bone … as C channels).

    Matches pydicom's ``apply_voi_lut`` / ``apply_windowing`` (LINEAR) with the same centre/width once its
    output range is rescaled to [0, 1].

    Args:
        values: (H, W) modality values (HU for CT), e.g. ``DicomImage.values``.
        windows: C windows in the same units, one output channel each, in order.
        invert: True for MONOCHROME1 (``DicomImage.needs_inversion``): returns ``1 - y`` so 1.0 is bright.

    Returns:
        (C, H, W) float32 in [0, 1].
    """
    if len(windows) == 0:
        raise ValueError("window_stack needs at least one window")
    values = np.asarray(values)
    stack = np.stack([_linear_window(values, window) for window in windows])
    return 1.0 - stack if invert else stack


def percentile_window(values: np.ndarray, valid: np.ndarray, low: float = 0.5, high: float = 99.5,
                      invert: bool = False) -> np.ndarray:
    """Per-image percentile window for modalities without calibrated units (X-ray, MR).

    The percentiles are taken over valid pixels only, so padding does not stretch the window. Values map
    linearly from ``[p_low, p_high]`` to [0, 1] and are clipped.

    Args:
        values: (H, W) modality values.
        valid: (H, W) bool, pixels used for the percentiles.
        low: lower percentile in percent, 0 ≤ low < high.
        high: upper percentile in percent, ≤ 100.
        invert: True for MONOCHROME1: returns ``1 - y`` so 1.0 is bright.

    Returns:
        (1, H, W) float32 in [0, 1]. An image without valid pixels, or a constant one, maps to all zeros
        (before inversion).
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    values = np.asarray(values, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != values.shape:
        raise ValueError(f"valid mask shape {valid.shape} differs from image shape {values.shape}")
    out = np.zeros((1, *values.shape), dtype=np.float32)
    p_low, p_high = np.percentile(values[valid], [low, high]) if valid.any() else (0.0, 0.0)
    if p_high > p_low:
        out[0] = np.clip((values - p_low) / (p_high - p_low), 0.0, 1.0)
    else:
        log.debug("percentile window: no valid pixels or a constant image, output is all zeros")
    return 1.0 - out if invert else out
