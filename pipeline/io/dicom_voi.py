"""The file's own VOI LUT for projection radiography (CR, DX, MG, RF, XA, IO): stored detector signal → display.

A radiograph's stored values are detector signal with a wide, vendor-specific range; the VOI LUT module is the
mapping the radiologist's viewer applies (PS3.3 C.11.2): VOI LUT Sequence items (lookup tables) and Window Center /
Width pairs with a VOI LUT Function (LINEAR, LINEAR_EXACT or SIGMOID). A file may hold several alternatives
("views"): they are numbered 1 … k for the tables, then k + 1 … k + m for the windows, and ``number`` picks one
(the first table, else the first window, is what a viewer shows by default, as pydicom's ``prefer_lut``). The
description returned says which was used.

Windows are applied by pydicom's ``apply_voi_lut`` and rescaled by the window's own output range
``y_min … y_max``. Tables are looked up here, as the standard defines it (input below the first mapped value →
first entry, beyond the last → last entry): pydicom 3.0's ``apply_voi`` builds its index array in the table's
output type, so an 8-bit table of more than 256 entries wraps around. The first mapped value is read as signed
when the descriptor stores it as US but the pixels are signed (a common encoding of e.g. −2048 as 63488). Table
output is rescaled by the table's own minimum and maximum entry. A window the standard does not allow (width < 1
for LINEAR, ≤ 0 otherwise, an unknown function, malformed values) is not applied: the caller falls back to its
robust window and says why.
"""

from __future__ import annotations

import struct
import warnings

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut
from pydicom.uid import UID

from pipeline.io.dicom_pixels import frame_modality_source, functional_group

_SENTINEL = 1e12  # beyond any window: gives a window's y_min / y_max
_VOI_KEYWORDS = ("WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence")
_RANGE_KEYWORDS = ("PhotometricInterpretation", "BitsStored", "PixelRepresentation", "ModalityLUTSequence")


class UnusableVOI(ValueError):
    """The file's VOI LUT cannot be applied as the standard defines it (the message says why)."""


def frame_voi_source(ds: Dataset, index: int) -> Dataset:
    """The dataset holding frame ``index``'s VOI LUT module: its Frame VOI LUT macro (per-frame, else shared) with
    the frame's rescale, else ``ds`` itself (classic objects)."""
    macro = functional_group(ds, index, "FrameVOILUTSequence")
    if macro is None:
        return ds
    source = Dataset()
    for keyword in _RANGE_KEYWORDS:
        if keyword in ds:
            setattr(source, keyword, ds[keyword].value)
    rescale = frame_modality_source(ds, index)
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword in rescale:
            setattr(source, keyword, rescale[keyword].value)
    for keyword in _VOI_KEYWORDS:
        if keyword in macro:
            setattr(source, keyword, macro[keyword].value)
    if hasattr(ds, "file_meta"):
        source.file_meta = ds.file_meta
    return source


def voi_alternatives(source: Dataset) -> tuple[int, int]:
    """(tables, windows): how many VOI LUT Sequence items and Window Center / Width pairs the module holds."""
    items = [item for item in source.get("VOILUTSequence") or []
             if item.get("LUTDescriptor") is not None and item.get("LUTData") is not None]
    windows = 0
    if source.get("WindowCenter") is not None and source.get("WindowWidth") is not None:
        windows = min(_multiplicity(source["WindowCenter"]), _multiplicity(source["WindowWidth"]))
    return len(items), windows


def _multiplicity(element) -> int:
    return int(element.VM) if element.VM else 0


def apply_file_voi(values: np.ndarray, ds: Dataset, index: int = 0,
                   number: int = 1) -> tuple[np.ndarray, str] | None:
    """The file's VOI LUT applied to one frame's modality values, in [0, 1]; None when the file has none.

    Args:
        values: (H, W) modality values (after the modality LUT).
        ds: the dataset of the file.
        index: 0-based frame, for enhanced objects' per-frame VOI.
        number: which alternative (1-based: tables first, then windows); when the file has fewer, the first is
            used and the description says so.

    Returns:
        ((H, W) float32 in [0, 1], not inverted for MONOCHROME1; a description such as
        ``"file window 2 of 3 (C 2048 W 4096, SIGMOID)"``), or None.

    Raises:
        UnusableVOI: the chosen alternative breaks the standard's rules (see the module docstring).
    """
    source = frame_voi_source(ds, index)
    tables, windows = voi_alternatives(source)
    total = tables + windows
    if total == 0:
        return None
    chosen = number if number <= total else 1
    note = "" if chosen == number else f", voi_number {number} absent"
    if chosen <= tables:
        mapped = _lookup(values, source, source.VOILUTSequence[chosen - 1])
        return mapped, f"file VOI LUT {chosen} of {total}{note}"
    return _window(values, source, chosen - tables - 1, f"{chosen} of {total}", note)


def _lookup(values: np.ndarray, source: Dataset, item: Dataset) -> np.ndarray:
    """PS3.3 C.11.2.1.1: the table entry of each value, the output rescaled by the table's extremes."""
    table = lut_entries(item, source)
    first = first_mapped_value(item, source)
    position = np.clip(np.rint(np.asarray(values, np.float64)) - first, 0, len(table) - 1).astype(np.int64)
    low, high = float(table.min()), float(table.max())
    if high <= low:
        return np.zeros(np.shape(values), np.float32)
    return ((table[position] - low) / (high - low)).astype(np.float32)


def lut_entries(item: Dataset, source: Dataset) -> np.ndarray:
    """A VOI LUT's entries as int64 (LUT Data is US, or OW bytes in the dataset's byte order)."""
    descriptor = item.LUTDescriptor
    entries = int(descriptor[0]) or 2 ** 16
    element = item["LUTData"]
    if element.VR == "OW" or isinstance(element.value, bytes | bytearray):
        meta = getattr(source, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        little = syntax is None or UID(str(syntax)).is_little_endian
        data = bytes(element.value)
        table = np.frombuffer(data, dtype="<u2" if little else ">u2", count=len(data) // 2)
    else:
        value = element.value
        table = np.asarray([value] if isinstance(value, int) else list(value))
    if len(table) < entries:
        raise UnusableVOI(f"VOI LUT Data holds {len(table)} entries, its descriptor {entries}")
    return table[:entries].astype(np.int64)


def first_mapped_value(item: Dataset, source: Dataset) -> int:
    """The descriptor's first mapped input value, signed when the pixels are (US 63488 → −2048)."""
    first = int(item.LUTDescriptor[1])
    signed = int(source.get("PixelRepresentation", 0) or 0) == 1
    rescaled_negative = float(source.get("RescaleIntercept", 0) or 0) < 0
    if first >= 2 ** 15 and (signed or rescaled_negative):
        first -= 2 ** 16
    return first


def _window(values: np.ndarray, source: Dataset, position: int, which: str,
            note: str) -> tuple[np.ndarray, str]:
    """Window ``position`` (0-based) by pydicom's ``apply_voi_lut``, rescaled by its output range."""
    function = str(source.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    try:
        center, width = _window_value(source, "WindowCenter", position), _window_value(source, "WindowWidth",
                                                                                      position)
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise ValueError(f"unknown VOI LUT Function {function}")
        if width < 1 if function == "LINEAR" else width <= 0:
            raise ValueError(f"Window Width {width:g} not allowed for {function}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # exp overflow at the sentinels (SIGMOID)
            low, high = (float(v) for v in apply_voi_lut(np.array([-_SENTINEL, _SENTINEL]), source, position,
                                                         prefer_lut=False))
            mapped = apply_voi_lut(np.asarray(values, np.float64), source, position, prefer_lut=False)
    except (ValueError, TypeError, IndexError, AttributeError, struct.error) as error:
        raise UnusableVOI(f"file window {which} unusable ({' '.join(str(error).split())})") from error
    text = f"file window {which} (C {center:g} W {width:g}, {function}{note})"
    if high <= low:
        return np.zeros(np.shape(values), np.float32), text
    return np.clip((np.asarray(mapped, np.float64) - low) / (high - low), 0.0, 1.0).astype(np.float32), text


def _window_value(source: Dataset, keyword: str, position: int) -> float:
    element = source[keyword]
    return float(element.value[position] if element.VM > 1 else element.value)
