"""DICOM file → float image(s) in modality units + valid-pixel mask + grouping metadata.

Pixel pipeline (docs/background.md §3), split between two steps so that one decoded image can be windowed several ways:

1. :func:`read_dicom_frames` (or :func:`read_dicom` for one greyscale frame): decode (pydicom ``iter_pixels``;
   compressed transfer syntaxes through the pylibjpeg plugins) → **modality LUT** per frame
   (``pydicom.pixels.apply_modality_lut``: RescaleSlope/Intercept, so CT becomes HU) → **PixelPaddingValue**
   mask (compared with the *stored* values, as the standard defines it).
2. :func:`window_stack` (CT: one HU window per channel) or :func:`percentile_window` (X-ray, MR)
   → values in [0, 1] → **MONOCHROME1 inversion**.

Header: a plain file (Part 10, uncompressed little-endian greyscale, no functional groups) is read by
:mod:`pipeline.io.dicom_header`, which walks the element stream for the ~20 attributes used here (~3× faster
than ``dcmread``, the same values: tested on every pydicom test file); every other file, and any file that
reader declines, is read by pydicom.

Transfer syntaxes: whatever pydicom 3 decodes with pylibjpeg + pylibjpeg-libjpeg + pylibjpeg-openjpeg and its
own native / RLE support: implicit and explicit VR little endian, explicit big endian, deflated, RLE, JPEG
baseline / extended / lossless (process 14, SV1), JPEG-LS lossless and near-lossless, JPEG 2000 and HTJ2K
(openjpeg ≥ 2.5 decodes HT code-blocks). Anything else (MPEG / H.264 video, JPIP, a missing plugin, a corrupt
codestream) raises :class:`~pipeline.io.UnreadableImageError` whose one line names the file and the syntax.

Policies:

* **MONOCHROME1**: the readers never invert. ``DicomImage.values`` stay in modality units (for MONOCHROME1,
  low stored values are displayed *bright*), so HU and other physical values keep their meaning and windows
  stay comparable between files. The windowing functions take ``invert``; the caller sets it from
  ``DicomImage.needs_inversion``. After windowing, 1.0 is always "bright / dense".
* **Multi-frame**: :func:`read_dicom_frames` returns one :class:`DicomImage` per frame, in frame order
  (``frame_index`` 0-based), each with its own modality LUT: RescaleSlope/Intercept from the frame's
  Pixel Value Transformation functional group (per-frame, else shared, else top level) and its own pixel
  spacing. :func:`read_dicom` is the single-image reader kept for existing callers: it raises for a
  multi-frame object (it never silently keeps frame 0 and drops the rest).
* **Colour**: the models are greyscale (CT windows, X-ray, MR), and colour in a PACS export is mostly
  ultrasound, secondary captures and screenshots, where hue is Doppler or annotation overlay and brightness
  carries the anatomy. :func:`read_dicom_frames` therefore turns RGB, YBR_FULL, YBR_FULL_422 (pydicom's
  decoder converts them to RGB with ``pydicom.pixels.convert_color_space``), YBR_ICT/YBR_RCT (JPEG 2000) and
  PALETTE COLOR (``pydicom.pixels.apply_color_lut``) into **one ITU-R BT.601 luminance channel**
  (0.299 R + 0.587 G + 0.114 B, i.e. the Y of YBR_FULL) in the decoded sample units (0–255 for 8-bit samples),
  reported as ``photometric="MONOCHROME2"`` with the file's own value in ``source_photometric``. Colour images
  have no calibrated units: window them with :func:`percentile_window`. :func:`read_dicom` stays
  greyscale-only and rejects colour.
* **Not images**: SR, KO, PR, RT plan / dose / structure set, waveforms, DICOMDIR, SEG … raise
  :class:`NotAnImageError` (a subclass of ``UnreadableImageError``): report them as *skipped*, not *rejected*.
  SEG and RTSTRUCT are labels: they raise the subclass :class:`SegmentationObjectError`,
  :func:`read_segmentation_reference` reads which images they refer to, and
  :func:`pipeline.io.dicom_seg.read_seg_layers` / :func:`pipeline.io.dicom_rtstruct.read_rtstruct_layers`
  decode their masks on those images' pixel grids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from pipeline.io import UnreadableImageError
from pipeline.io.dicom_files import (
    NotAnImageError, SegmentationObjectError, check_image_object, frame_count, is_dicom_file, read_dataset,
)
from pipeline.io.dicom_header import PlainHeader, read_plain_header
from pipeline.io.dicom_mosaic import split_mosaic
from pipeline.io.dicom_pixels import (
    GREYSCALE, check_photometric, decode_frames, frame_pixel_spacing, frame_rgb, frame_values, native_frames,
    padding_mask, photometric_of, stored_sample_max,
)
from pipeline.io.dicom_seg import SegmentationFrame, SegmentationReference, read_segmentation_reference

__all__ = [
    "GREYSCALE", "DicomHeader", "DicomImage", "open_dicom", "group_key", "HUWindow", "NotAnImageError", "SegmentationFrame", "SegmentationObjectError",
    "SegmentationReference",
    "is_dicom_file", "iter_dicom_frames", "padding_mask", "percentile_window", "read_dicom",
    "read_dicom_frames", "read_segmentation_reference", "window_stack",
]

log = logging.getLogger(__name__)


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


GROUP_KEYS = (("PatientID", "patient"), ("PatientName", "patient"), ("StudyInstanceUID", "study"),
              ("SeriesInstanceUID", "series"))
"""Keys an image is grouped by for the patient split, strongest first; without any, the file is its own group."""
PHI_KEYWORDS = ("PatientName", "PatientID", "AccessionNumber")
"""Identifiers that exports also write into file and folder names (``DOE^JANE_1234567/IM0001``)."""


@dataclass(frozen=True)
class DicomImage:
    """One decoded image: a single-frame file, one frame of a multi-frame file, or one tile of a MOSAIC.

    Attributes:
        values: (H, W) float32 after the modality LUT (HU for CT), *not* inverted for MONOCHROME1 and not
            windowed; for a colour file, its BT.601 luminance (see the module docstring), or with
            ``keep_colour`` its (H, W, 3) RGB samples.
        valid: (H, W) bool, False at PixelPaddingValue pixels (or inside the padding range when
            PixelPaddingRangeLimit is present).
        photometric: ``MONOCHROME1`` or ``MONOCHROME2`` (colour files: ``MONOCHROME2``, as luminance; ``RGB``
            when the colour was kept).
        modality: Modality (``CT``, ``CR``, ``MR`` …), ``""`` when absent.
        patient_key: the raw value of the strongest grouping key present (:data:`GROUP_KEYS`), ``""`` when the
            file has none. PHI: the caller hashes it and must never log or write it.
        study_key: raw StudyInstanceUID, ``""`` when absent (PHI-adjacent: hash before writing).
        pixel_spacing_mm: (row, column) spacing in mm from the frame's Pixel Measures functional group, else
            PixelSpacing, else ImagerPixelSpacing (detector plane, for projection X-ray), else None.
        sop_instance_uid: SOPInstanceUID of the file, to match DICOM-SEG / RTSTRUCT references
            (:class:`SegmentationReference`); ``""`` when absent. PHI-adjacent: never log it.
        frame_index: 0-based frame of a multi-frame file (DICOM frame numbers are ``frame_index + 1``); for a
            MOSAIC, the 0-based slice (tile) of the mosaic.
        source_photometric: the file's PhotometricInterpretation before any colour → luminance conversion.
        group_by: which key ``patient_key`` is: ``patient``, ``study``, ``series`` or ``file`` (none present).
        series_key: raw SeriesInstanceUID, ``""`` when absent (MR intensities are normalised per series).
        sample_max: with ``keep_colour``, the largest value the decoded samples can take (``2**BitsStored - 1``,
            a palette's entry depth) when ``values`` are stored samples without a rescale; else None.
    """

    values: np.ndarray
    valid: np.ndarray
    photometric: str
    modality: str
    patient_key: str
    study_key: str
    pixel_spacing_mm: tuple[float, float] | None
    sop_instance_uid: str = ""
    frame_index: int = 0
    source_photometric: str = ""
    group_by: str = "patient"
    series_key: str = ""
    sample_max: float | None = None

    @property
    def needs_inversion(self) -> bool:
        """True for MONOCHROME1: pass it as ``invert`` to the windowing functions."""
        return self.photometric == "MONOCHROME1"


@dataclass(frozen=True)
class DicomHeader:
    """An image object whose header has been read and checked, before any pixel is decoded.

    Ingest decides from this whether its preset reads the file (modality, colour) before paying for the decode.

    Attributes:
        path: the file.
        dataset: pydicom's dataset, or the plain header of :mod:`pipeline.io.dicom_header`.
        modality: Modality, upper case, ``""`` when absent.
        photometric: the file's PhotometricInterpretation.
        image_type: ImageType values, upper case (``MOSAIC`` marks a Siemens mosaic of slices).
        phi: raw PatientName / PatientID / AccessionNumber values present. PHI: only for redacting paths,
            never written.
    """

    path: Path
    dataset: Dataset | PlainHeader
    modality: str
    photometric: str
    image_type: tuple[str, ...]
    phi: tuple[str, ...]

    @property
    def is_colour(self) -> bool:
        return self.photometric not in GREYSCALE

    @property
    def is_mosaic(self) -> bool:
        return "MOSAIC" in self.image_type

    def images(self, keep_colour: bool = False) -> Iterator[DicomImage]:
        """Decoded frames (MOSAIC: slices) one at a time; colour as RGB when ``keep_colour``, else luminance."""
        frames = _images(self.dataset, self.path, keep_colour)
        return (tile for image in frames for tile in split_mosaic(image, self.dataset, self.path)) \
            if self.is_mosaic else frames


def open_dicom(path: Path, fast_header: bool = True) -> DicomHeader:
    """Read and check the header of a DICOM image file; the pixels are decoded later by ``images()``.

    Args:
        path: the file.
        fast_header: read a plain uncompressed greyscale file with :mod:`pipeline.io.dicom_header` (~3× faster
            than ``dcmread``; it answers only the attributes CT ingest needs). False: always pydicom.

    Raises:
        NotAnImageError: a valid DICOM object that is not an image: skip it.
        UnreadableImageError: not DICOM, truncated, unsupported photometric interpretation. One line naming
            the file.
    """
    path = Path(path)
    ds = _read_image_dataset(path) if fast_header else read_dataset(path)
    check_image_object(ds, path)
    photometric = check_photometric(ds, path)
    frame_count(ds, path)
    image_type = tuple(str(v).strip().upper() for v in _values(ds.get("ImageType")))
    phi = tuple(v for v in (str(ds.get(k, "") or "").strip() for k in PHI_KEYWORDS) if v)
    return DicomHeader(path, ds, str(ds.get("Modality", "") or "").strip().upper(), photometric, image_type, phi)


def read_identifiers(path: Path) -> tuple[tuple[str, ...], str]:
    """(PatientName / PatientID / AccessionNumber values, Modality) of a file whatever its state, for redacting
    its path and counting it when it is rejected; ``((), "")`` when nothing can be read. Never raises."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=[*PHI_KEYWORDS, "Modality"])
        phi = tuple(v for v in (str(ds.get(k, "") or "").strip() for k in PHI_KEYWORDS) if v)
        return phi, str(ds.get("Modality", "") or "").strip().upper()
    except Exception:  # truncated, not DICOM, odd encodings: nothing to learn, nothing to redact
        return (), ""


def _values(value: object) -> list[object]:
    """A DICOM value of multiplicity 1-n as a list (pydicom gives a single value or a MultiValue)."""
    if value is None or value == "":
        return []
    return [value] if isinstance(value, str) else list(value)


def read_dicom(path: Path) -> DicomImage:
    """Decode one single-frame greyscale DICOM file into modality values, a valid mask and grouping keys.

    The strict reader kept for existing callers; real-world folders should use :func:`read_dicom_frames`,
    which also reads multi-frame and colour images.

    Args:
        path: a DICOM file, any transfer syntax pydicom + pylibjpeg can decode.

    Returns:
        The image; ``values`` is (H, W) float32 in modality units (HU for CT).

    Raises:
        NotAnImageError: a valid DICOM object that is not an image (SR, RT dose, SEG, DICOMDIR …).
        UnreadableImageError: not DICOM, truncated, undecodable transfer syntax, colour or multi-frame image.
            The message names the file.
    """
    path = Path(path)
    ds = read_dataset(path)
    check_image_object(ds, path)
    photometric = photometric_of(ds)
    if photometric not in GREYSCALE or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        found = photometric or "<missing>"
        raise UnreadableImageError(f"{path}: unsupported photometric interpretation {found} "
                                   "(read_dicom reads greyscale only; read_dicom_frames converts colour)")
    frames = frame_count(ds, path)
    if frames != 1:
        raise UnreadableImageError(f"{path}: multi-frame DICOM ({frames} frames): "
                                   "read it with read_dicom_frames")
    return next(_images(ds, path))


def read_dicom_frames(path: Path) -> list[DicomImage]:
    """Decode every frame of a DICOM image file: one :class:`DicomImage` per frame, in frame order.

    Single-frame files give a list of one. Greyscale, colour and palette images are all read (colour as
    BT.601 luminance); see the module docstring for the multi-frame and colour policies.

    Raises:
        NotAnImageError: a valid DICOM object that is not an image (SR, RT plan/dose, PR, KO, SEG, RTSTRUCT,
            DICOMDIR …): skip it.
        UnreadableImageError: not DICOM, truncated, undecodable, or an unsupported photometric interpretation.
            The message is one line and names the file.
    """
    return list(iter_dicom_frames(path))


def iter_dicom_frames(path: Path) -> Iterator[DicomImage]:
    """:func:`read_dicom_frames` decoded one frame at a time, for large multi-frame files (tomosynthesis).

    Only one decoded frame is held at a time (the file's encoded bytes are read once). The file is checked
    (readable, an image, supported photometric) when this is called; a decoding error of a later frame is
    raised while iterating.
    """
    return open_dicom(path).images()


def _read_image_dataset(path: Path) -> Dataset | PlainHeader:
    """The plain header of an uncompressed little-endian greyscale file (:mod:`pipeline.io.dicom_header`,
    ~3× faster than ``dcmread``), else pydicom's dataset. Both give the same frames and keys (tested)."""
    header = read_plain_header(path)
    if header is not None and native_frames(header, header.file_meta.TransferSyntaxUID) is not None:
        return header
    return read_dataset(path)


def _images(ds: Dataset, path: Path, keep_colour: bool = False) -> Iterator[DicomImage]:
    """Decoded frames as :class:`DicomImage`; the identity keys are read before any decoding."""
    patient_key, group_by = group_key(ds)
    keys = {"modality": str(ds.get("Modality", "") or "").strip().upper(), "patient_key": patient_key,
            "group_by": group_by, "study_key": str(ds.get("StudyInstanceUID", "") or ""),
            "series_key": str(ds.get("SeriesInstanceUID", "") or ""),
            "sop_instance_uid": str(ds.get("SOPInstanceUID", "") or ""),
            "source_photometric": photometric_of(ds)}
    colour = keys["source_photometric"] not in GREYSCALE
    photometric = keys["source_photometric"] if not colour else "RGB" if keep_colour else "MONOCHROME2"
    values = frame_rgb if colour and keep_colour else frame_values
    sample_max = stored_sample_max(ds) if keep_colour else None  # only colour scaling uses it
    return (DicomImage(*values(stored, ds, index, path), photometric=photometric, frame_index=index,
                       pixel_spacing_mm=frame_pixel_spacing(ds, index), sample_max=sample_max, **keys)
            for index, stored in enumerate(decode_frames(ds, path)))


def group_key(ds: Dataset) -> tuple[str, str]:
    """(raw value, kind) of the strongest key of :data:`GROUP_KEYS` present; ``("", "file")`` without any.

    A file without patient identifiers (anonymised test data, some secondary captures) is still an image:
    it is grouped by study, series or, failing those, on its own, and ingest counts how many were, since a
    patient split cannot be guaranteed for them.
    """
    for keyword, kind in GROUP_KEYS:
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            return value, kind
    return "", "file"


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
