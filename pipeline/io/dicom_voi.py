"""The file's own VOI LUT for projection radiography (CR, DX, MG, RF, XA, IO): stored detector signal → display.

A radiograph's stored values are detector signal with a wide, vendor-specific range; the VOI LUT module is the
mapping the radiologist's viewer applies (PS3.3 C.11.2): a VOI LUT Sequence (a lookup table), or Window Center /
Width with a VOI LUT Function (LINEAR, LINEAR_EXACT or SIGMOID). A file may hold several alternatives ("views");
``number`` picks one (1-based, as the standard numbers them), and the description returned says which was used.

pydicom's ``apply_voi_lut`` does the mapping; this module only finds the module for a frame (enhanced objects keep
it in the Frame VOI LUT functional group), chooses LUT over window as pydicom does (``prefer_lut``), and rescales
the output to [0, 1] by the mapping's own output range: the LUT's entries, or the window's ``y_min … y_max``.
"""

from __future__ import annotations

import warnings

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut
from pydicom.pixels.processing import apply_voi

from pipeline.io.dicom_pixels import frame_modality_source, functional_group

_SENTINEL = 1e12  # beyond any window: gives a window's y_min / y_max
_VOI_KEYWORDS = ("WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence")
_RANGE_KEYWORDS = ("PhotometricInterpretation", "BitsStored", "PixelRepresentation", "ModalityLUTSequence")


def frame_voi_source(ds: Dataset, index: int) -> Dataset:
    """The dataset to hand to ``apply_voi_lut`` for frame ``index``: the frame's Frame VOI LUT macro (per-frame,
    else shared) with the frame's rescale, else ``ds`` itself (classic objects)."""
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


def voi_alternatives(source: Dataset) -> tuple[str, int]:
    """(``"lut"`` | ``"window"`` | ``""``, how many alternatives): what ``apply_voi_lut`` would apply."""
    items = source.get("VOILUTSequence") or []
    if items and items[0].get("LUTDescriptor") is not None and items[0].get("LUTData") is not None:
        return "lut", len(items)
    if source.get("WindowCenter") is not None and source.get("WindowWidth") is not None:
        centers = source["WindowCenter"]
        return "window", int(centers.VM) if centers.VM else 0
    return "", 0


def apply_file_voi(values: np.ndarray, ds: Dataset, index: int = 0,
                   number: int = 1) -> tuple[np.ndarray, str] | None:
    """The file's VOI LUT applied to one frame's modality values, in [0, 1]; None when the file has none.

    Args:
        values: (H, W) modality values (after the modality LUT).
        ds: the dataset of the file.
        index: 0-based frame, for enhanced objects' per-frame VOI.
        number: which of several VOI alternatives (1-based); when the file has fewer, the first is used and
            the description says so.

    Returns:
        ((H, W) float32 in [0, 1], not inverted for MONOCHROME1; a description such as
        ``"file window 2 of 3 (C 2048 W 4096, SIGMOID)"``), or None.
    """
    source = frame_voi_source(ds, index)
    kind, count = voi_alternatives(source)
    if not kind or count < 1:
        return None
    chosen = number if number <= count else 1
    note = "" if chosen == number else f", voi_number {number} absent"
    if kind == "lut":
        item = source.VOILUTSequence[chosen - 1]
        first, entries = _lut_domain(item)
        table = apply_voi(np.arange(first, first + entries, dtype=np.int64), source, chosen - 1)
        low, high = float(table.min()), float(table.max())
        mapped = apply_voi(np.rint(values).astype(np.int64), source, chosen - 1)
        text = f"file VOI LUT {chosen} of {count}{note}"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # exp overflow at the sentinels (SIGMOID)
            low, high = (float(v) for v in apply_voi_lut(np.array([-_SENTINEL, _SENTINEL]), source,
                                                         chosen - 1, prefer_lut=False))
            mapped = apply_voi_lut(np.asarray(values, np.float64), source, chosen - 1, prefer_lut=False)
        function = str(source.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        center, width = _window_value(source, "WindowCenter", chosen), _window_value(source, "WindowWidth", chosen)
        text = f"file window {chosen} of {count} (C {center:g} W {width:g}, {function}{note})"
    if high <= low:
        return np.zeros(np.shape(values), np.float32), text
    return np.clip((np.asarray(mapped, np.float64) - low) / (high - low), 0.0, 1.0).astype(np.float32), text


def _lut_domain(item: Dataset) -> tuple[int, int]:
    """(first mapped input value, number of entries) from a LUT Descriptor (0 entries means 2**16)."""
    descriptor = item.LUTDescriptor
    return int(descriptor[1]), int(descriptor[0]) or 2 ** 16


def _window_value(source: Dataset, keyword: str, number: int) -> float:
    element = source[keyword]
    return float(element.value[number - 1] if element.VM > 1 else element.value)
