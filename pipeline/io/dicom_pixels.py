"""Decoded frames → modality values: per-frame modality LUT, colour → luminance, padding mask, pixel spacing.

Enhanced multi-frame objects (Enhanced CT/MR/XA, Legacy Converted Enhanced …) keep per-frame attributes in
*functional groups* (PS3.3 C.7.6.16): a frame's macro is in ``PerFrameFunctionalGroupsSequence[frame]``, else
in ``SharedFunctionalGroupsSequence[0]``, else (classic objects) at the top level of the dataset. Rescale
slope/intercept and pixel spacing are looked up in that order for every frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, iter_pixels
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pipeline.io import UnreadableImageError
from pipeline.io.dicom_files import frame_count, one_line

GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
# pydicom's decoders return these as RGB: YBR_FULL / YBR_FULL_422 through pydicom.pixels.convert_color_space
# (the default ``as_rgb``), YBR_ICT / YBR_RCT through the JPEG 2000 codec's inverse component transform.
RGB_DECODED = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
PALETTE = "PALETTE COLOR"
BT601_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights of R, G, B: the Y of YBR_FULL
NATIVE_LITTLE_ENDIAN = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
EXACT_IN_FLOAT32 = 2 ** 23  # |intercept| bound under which int16 + intercept is exact in float32
PYDICOM_DECODER_LOGGER = "pydicom.pixels.decoders.base"


class _DecoderTracebacksAtDebug(logging.Filter):
    """pydicom logs each failing decoder plugin at ERROR with its traceback, then raises one error naming them
    all, which ingest turns into the file's one-line reason. The records are demoted to DEBUG: shown only
    when pydicom's logger is set to DEBUG (``pydicom.config.debug(True)``), never twice per file by default."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _demote_decoder_tracebacks() -> None:
    logger = logging.getLogger(PYDICOM_DECODER_LOGGER)
    if not any(isinstance(f, _DecoderTracebacksAtDebug) for f in logger.filters):
        logger.addFilter(_DecoderTracebacksAtDebug())


_demote_decoder_tracebacks()


def photometric_of(ds: Dataset) -> str:
    return str(ds.get("PhotometricInterpretation", "") or "").strip().upper()


def check_photometric(ds: Dataset, path: Path) -> str:
    """The PhotometricInterpretation, if supported with this SamplesPerPixel; else a one-line error."""
    photometric, samples = photometric_of(ds), int(ds.get("SamplesPerPixel", 1) or 1)
    supported = {**dict.fromkeys(GREYSCALE, 1), **dict.fromkeys(RGB_DECODED, 3), PALETTE: 1}
    if supported.get(photometric) != samples:
        found = photometric or "<missing>"
        raise UnreadableImageError(f"{path}: unsupported photometric interpretation {found} with "
                                   f"{samples} samples per pixel")
    return photometric


def decode_frames(ds: Dataset, path: Path) -> Iterator[np.ndarray]:
    """Stored values frame by frame (pydicom ``iter_pixels``: one frame in memory at a time).

    Yields (H, W) stored values for greyscale and palette images, (H, W, 3) RGB for colour ones.
    """
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    native = native_frames(ds, syntax)
    if native is not None:
        yield from native
        return
    name = getattr(syntax, "name", syntax) or "no transfer syntax"
    try:
        yield from iter_pixels(ds)
    except Exception as error:  # missing plugin, truncated or corrupt codestream: one error type for callers
        raise UnreadableImageError(f"{path}: cannot decode pixel data ({name}): {one_line(error)}") from error


def native_frames(ds: Dataset, syntax: object) -> Iterator[np.ndarray] | None:
    """(H, W) stored values frame by frame, straight from uncompressed little-endian greyscale Pixel Data;
    None for anything else.

    The common CT / MR / X-ray file, decoded the way pydicom's native decoder does it (unused high bits
    cleared, or sign-extended for signed data, by shifting left then right), without its per-call option
    handling, which costs as much as parsing the file: about 0.25 ms of a 0.55 ms read of a 512² slice.
    Frames are views of the file's bytes, copied one at a time only when bits must be shifted. Anything
    else (compressed, big endian, colour, palette, 1- or 32-bit, short Pixel Data) returns None and goes
    through pydicom, which also produces the error messages for broken files.
    """
    if syntax not in NATIVE_LITTLE_ENDIAN or "PixelData" not in ds or photometric_of(ds) not in GREYSCALE:
        return None
    try:
        samples, allocated = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.BitsAllocated)
        stored_bits, signed = int(ds.BitsStored), int(ds.PixelRepresentation)
        shape = (frame_count(ds, Path()), int(ds.Rows), int(ds.Columns))
        data = ds.PixelData
    except Exception:  # missing or malformed attributes: pydicom's decoder reports them, with the file
        return None
    if (samples != 1 or allocated not in (8, 16) or not 1 <= stored_bits <= allocated or signed not in (0, 1)
            or min(shape) < 1 or not isinstance(data, bytes | memoryview)
            or len(data) < np.prod(shape) * allocated // 8):
        return None
    dtype = np.dtype(f"<{'iu'[signed == 0]}{allocated // 8}")
    frames = np.frombuffer(data, dtype, count=int(np.prod(shape))).reshape(shape)
    unused = allocated - stored_bits
    return (_without_unused_bits(frame, unused) for frame in frames) if unused else iter(frames)


def _without_unused_bits(frame: np.ndarray, unused: int) -> np.ndarray:
    """Shift the ``unused`` high bits out and back: zeros for unsigned data, the sign for signed data."""
    frame = frame.copy()
    np.left_shift(frame, unused, out=frame)
    return np.right_shift(frame, unused, out=frame)


def frame_values(stored: np.ndarray, ds: Dataset, index: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One decoded frame → ((H, W) float32 values, (H, W) bool valid mask), following the colour policy.

    Greyscale: modality LUT with this frame's rescale (:func:`frame_modality_source`), padding masked.
    RGB-decoded colour: BT.601 luminance of the RGB samples, every pixel valid (padding is for greyscale).
    PALETTE COLOR: the palette (``apply_color_lut``) → BT.601 luminance; padding masked on the stored indices.
    """
    photometric = photometric_of(ds)
    expected_ndim = 3 if photometric in RGB_DECODED else 2
    if stored.ndim != expected_ndim:
        raise UnreadableImageError(f"{path}: frame {index} decoded to shape {stored.shape}, expected "
                                   f"{expected_ndim} dimensions for {photometric}")
    if photometric in RGB_DECODED:
        return luminance(stored), np.ones(stored.shape[:2], dtype=bool)
    if photometric == PALETTE:
        return _palette_luminance(stored, ds, path), padding_mask(stored, ds)
    return _modality_values(stored, ds, index, path), padding_mask(stored, ds)


def frame_rgb(stored: np.ndarray, ds: Dataset, index: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One decoded colour frame → ((H, W, 3) float32 RGB in sample units, (H, W) bool valid mask).

    RGB-decoded files (RGB, YBR_* converted by pydicom's decoder) keep their samples; PALETTE COLOR goes through
    the palette (``apply_color_lut``), padding masked on the stored indices. Greyscale files are not colour:
    use :func:`frame_values`.
    """
    photometric = photometric_of(ds)
    if photometric == PALETTE:
        if stored.ndim != 2:
            raise UnreadableImageError(f"{path}: frame {index} decoded to shape {stored.shape}, expected 2 "
                                       f"dimensions for {photometric}")
        return _palette_rgb(stored, ds, path).astype(np.float32), padding_mask(stored, ds)
    if photometric not in RGB_DECODED or stored.ndim != 3:
        raise UnreadableImageError(f"{path}: frame {index} is not a colour image ({photometric}, "
                                   f"shape {stored.shape})")
    return np.ascontiguousarray(stored[..., :3], dtype=np.float32), np.ones(stored.shape[:2], dtype=bool)


def stored_sample_max(ds: Dataset) -> float | None:
    """The largest value a decoded sample can take: a palette's entry depth, else ``2**BitsStored - 1`` for
    unsigned samples without a rescale; None when a rescale or signed samples make the range data-dependent."""
    if photometric_of(ds) == PALETTE:
        descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
        return float(2 ** int(descriptor[2]) - 1) if descriptor is not None and len(descriptor) == 3 else None
    try:
        bits, signed = int(ds.get("BitsStored", 0) or 0), int(ds.get("PixelRepresentation", 0) or 0)
    except (TypeError, ValueError):
        return None
    rescaled = "RescaleSlope" in ds and (float(ds.RescaleSlope) != 1 or float(ds.get("RescaleIntercept", 0)) != 0)
    if bits < 1 or signed or rescaled or ds.get("ModalityLUTSequence"):
        return None
    return float(2 ** bits - 1)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3 or 4) RGB(A) → (H, W) float32 BT.601 luminance in the same units (0–255 for 8-bit samples)."""
    return np.ascontiguousarray(rgb[..., :3].astype(np.float64) @ BT601_LUMA, dtype=np.float32)


def _palette_luminance(stored: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    return luminance(_palette_rgb(stored, ds, path))


def _palette_rgb(stored: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    try:
        return apply_color_lut(stored, ds)
    except Exception as error:  # missing or malformed palette descriptors / data
        raise UnreadableImageError(f"{path}: cannot apply the palette colour LUT: "
                                   f"{one_line(error)}") from error


def _modality_values(stored: np.ndarray, ds: Dataset, index: int, path: Path) -> np.ndarray:
    source = frame_modality_source(ds, index)
    shift = integer_shift(source, stored.dtype)
    if shift is not None:  # exactly pydicom's result, computed in float32 (CT: 0.05 instead of 0.23 ms)
        values = stored.astype(np.float32)
        return np.add(values, np.float32(shift), out=values) if shift else values
    try:
        values = apply_modality_lut(stored, source)
    except Exception as error:  # malformed Modality LUT Sequence / rescale values
        raise UnreadableImageError(f"{path}: cannot apply the modality LUT to frame {index}: "
                                   f"{one_line(error)}") from error
    return np.ascontiguousarray(values, dtype=np.float32)


def integer_shift(source: Dataset, dtype: np.dtype) -> int | None:
    """The intercept when the modality LUT is ``values = stored + intercept`` with an integer intercept
    (CT: slope 1, intercept −1024; 0 without rescale) on ≤ 16-bit integers, so float32 arithmetic is exact;
    None when pydicom's float64 ``apply_modality_lut`` must compute it (LUT sequence, other slopes)."""
    if source.get("ModalityLUTSequence") or dtype.kind not in "iu" or dtype.itemsize > 2:
        return None
    present = ("RescaleSlope" in source, "RescaleIntercept" in source)
    if not all(present):
        return 0  # pydicom rescales only when both are present
    try:
        slope, intercept = float(source.RescaleSlope), float(source.RescaleIntercept)
    except (TypeError, ValueError):
        return None
    if slope != 1 or not intercept.is_integer() or abs(intercept) > EXACT_IN_FLOAT32:
        return None
    return int(intercept)


def functional_group(ds: Dataset, index: int, sequence: str) -> Dataset | None:
    """The first item of functional-group macro ``sequence`` for frame ``index``: per-frame, else shared."""
    for groups, item in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups) or []
        if item < len(items) and items[item].get(sequence):
            return items[item][sequence][0]
    return None


def frame_modality_source(ds: Dataset, index: int) -> Dataset:
    """The dataset to hand to ``apply_modality_lut`` for frame ``index``.

    pydicom's ``apply_modality_lut`` reads RescaleSlope/Intercept (or the Modality LUT Sequence) at the top
    level only. For enhanced objects the frame's Pixel Value Transformation macro holds them instead, so a
    small dataset with just that frame's slope and intercept is built; classic objects use ``ds`` itself.
    """
    macro = functional_group(ds, index, "PixelValueTransformationSequence")
    if macro is None or "RescaleSlope" not in macro or "RescaleIntercept" not in macro:
        return ds
    rescale = Dataset()
    rescale.RescaleSlope, rescale.RescaleIntercept = macro.RescaleSlope, macro.RescaleIntercept
    return rescale


def frame_pixel_spacing(ds: Dataset, index: int) -> tuple[float, float] | None:
    """(row, column) spacing in mm: the frame's Pixel Measures macro, else PixelSpacing, else
    ImagerPixelSpacing (detector plane, for projection X-ray), else None."""
    macro = functional_group(ds, index, "PixelMeasuresSequence")
    for source, keyword in ((macro, "PixelSpacing"), (ds, "PixelSpacing"), (ds, "ImagerPixelSpacing")):
        spacing = source.get(keyword) if source is not None else None
        if spacing is not None and len(spacing) == 2:
            return float(spacing[0]), float(spacing[1])
    return None


def padding_mask(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Valid-pixel mask from PixelPaddingValue / PixelPaddingRangeLimit, on the *stored* values.

    The standard (PS3.3 C.7.5.1.1.2) defines padding in stored-value units, before the modality LUT, so the
    comparison is done there. With a range limit, every value between the two (inclusive, either order) is
    padding.

    Args:
        stored: (H, W) decoded stored values (one frame of ``ds.pixel_array``).
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
