"""Reading one window of a GeoTIFF into physical values with its validity: the per-scene read plan (bands, alpha,
scale / offset, the fast path for small integers, nodata compared directly) and the windowed read itself.
Policies are stated in :mod:`pipeline.io.geotiff`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import reduce

import numpy as np
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NodataShadowWarning
from rasterio.windows import Window



def one_line(error: BaseException) -> str:
    """An exception's text on one line (GDAL messages can span several), for a one-line rejection reason."""
    return " ".join(str(error).split())


def alpha_band_of(src) -> int | None:
    """1-based index of the band whose colour interpretation is alpha, or None."""
    alphas = [i for i, interp in enumerate(src.colorinterp, start=1) if interp == ColorInterp.alpha]
    return alphas[0] if alphas else None


@dataclass(frozen=True)
class ReadPlan:
    """What to read from an open dataset for each chip, decided once per scene.

    Attributes:
        indexes: 1-based data bands, in chip channel order.
        alpha: 1-based alpha band read alongside them (validity only), or None.
        scales: (C,) float64 per-channel scale.
        offsets: (C,) float64 per-channel offset.
        small_integers: every band read (alpha too) has one 8- or 16-bit integer dtype whose scaled extremes
            are finite in float32: GDAL reads them as stored (a quarter of the bytes of a float64 read), and
            no finiteness test is needed per chip.
        nodata_values: (C,) integer nodata of each band when every band's GDAL mask is its nodata value:
            compared with the stored values instead of reading GDAL's mask; None reads the mask.
        complex_bands: the data bands are complex (SAR SLC): read as complex, kept as amplitude ``|z|``.
    """

    indexes: tuple[int, ...]
    alpha: int | None
    scales: np.ndarray
    offsets: np.ndarray
    small_integers: bool = False
    nodata_values: tuple[int, ...] | None = None
    complex_bands: bool = False

    def for_warped(self, vrt) -> ReadPlan:
        """The plan for a single-band WarpedVRT with an added alpha band (band 2): its mask is the alpha;
        scale / offset stay the source's (GDAL does not copy them to the VRT)."""
        return replace(self, indexes=(1,), alpha=2, nodata_values=None,
                       small_integers=small_integer_read(vrt, (1, 2), self.scales, self.offsets))


def small_integer_read(src, read: tuple[int, ...], scales: np.ndarray, offsets: np.ndarray) -> bool:
    """One ≤ 16-bit integer dtype for all bands read (one ``read`` array), and finite scaled extremes."""
    if any(str(src.dtypes[i - 1]).startswith("complex") for i in read):  # incl. GDAL's CInt16, unknown to numpy
        return False
    dtypes = {np.dtype(src.dtypes[i - 1]) for i in read}
    if len(dtypes) != 1 or (dtype := dtypes.pop()).kind not in "iu" or dtype.itemsize > 2:
        return False
    largest = float(max(abs(np.iinfo(dtype).min), np.iinfo(dtype).max))
    with np.errstate(over="ignore"):
        return bool(np.isfinite((largest * np.abs(scales) + np.abs(offsets)).astype(np.float32)).all())


def nodata_values_of(src, indexes: tuple[int, ...]) -> tuple[int, ...] | None:
    """Integer nodata per band when GDAL's mask of every band is exactly "stored value == nodata"."""
    values = []
    for i in indexes:
        dtype, nodata = np.dtype(src.dtypes[i - 1]), src.nodatavals[i - 1]
        integer = dtype.kind in "iu" and dtype.itemsize <= 4  # exact in the float64 read of int32 too
        if (set(src.mask_flag_enums[i - 1]) != {MaskFlags.nodata} or not integer or nodata is None
                or not float(nodata).is_integer() or not np.iinfo(dtype).min <= nodata <= np.iinfo(dtype).max):
            return None  # float nodata (GDAL compares with a tolerance), masks, alpha: GDAL's own mask
        values.append(int(nodata))
    return tuple(values)


def mask_bands_for(src, plan: ReadPlan) -> list[int]:
    """Bands whose GDAL mask must be read: none when all-valid or alpha-only (alpha is read as data), one
    when the mask is per-dataset, else every band (per-band nodata)."""
    flags = [set(src.mask_flag_enums[i - 1]) for i in plan.indexes]
    alpha_read = plan.alpha is not None
    if plan.nodata_values is not None:  # compared on the stored values by read_window
        return []
    if all(f == {MaskFlags.all_valid} or (alpha_read and MaskFlags.alpha in f) for f in flags):
        return []
    if all(MaskFlags.per_dataset in f for f in flags):
        return [plan.indexes[0]]
    return list(plan.indexes)


def read_window(src, plan: ReadPlan, window: Window,
                mask_bands: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One window → ((C, H, W) float32 physical values, 0.0 where invalid; (H, W) bool valid).

    Data and alpha come from one ``read`` call (as stored for ``plan.small_integers``), scaled in float64 so
    ``scale·x + offset`` rounds once; values beyond float32's range become inf and so invalid. Nodata is
    compared on the stored values when ``plan.nodata_values`` allows it.

    Args:
        src: an open dataset (file, overview or WarpedVRT).
        plan: from :func:`read_plan`.
        window: the pixels to read.
        mask_bands: from :func:`mask_bands_for`; None works them out (pass them when reading many windows).
    """
    mask_bands = mask_bands_for(src, plan) if mask_bands is None else mask_bands
    channels = len(plan.indexes)
    stored = src.read(list(plan.indexes) + ([plan.alpha] if plan.alpha else []), window=window,
                      out_dtype=None if plan.small_integers else "complex128" if plan.complex_bands else "float64")
    if plan.complex_bands:  # SAR single-look complex: amplitude (alpha, if any, is real and stays as read)
        stored = np.abs(stored)
    masks = []  # (H, W) bool, one per reason a pixel can be invalid; stored values first: scaling is in place
    if plan.alpha:
        masks.append(stored[channels] > 0)
    if plan.nodata_values is not None:
        masks += [band != nodata for band, nodata in zip(stored, plan.nodata_values)]
    data = _scaled(stored[:channels], plan)
    if not plan.small_integers:  # finite by construction otherwise (read_plan checked the extremes)
        masks.append(np.isfinite(data).all(axis=0))
    if mask_bands:
        with warnings.catch_warnings():  # nodata shadowing alpha: handled above by reading alpha ourselves
            warnings.simplefilter("ignore", NodataShadowWarning)
            masks.append((src.read_masks(list(mask_bands), window=window) != 0).all(axis=0))
    valid = reduce(np.logical_and, masks) if masks else np.ones(data.shape[1:], dtype=bool)
    zero_invalid(data, valid)
    return data, valid


def zero_invalid(data: np.ndarray, valid: np.ndarray) -> None:
    """Set every channel of (C, H, W) ``data`` to 0.0 where (H, W) ``valid`` is False, in place: a masked
    copy, several times faster than boolean-index assignment, which gathers the indexes first."""
    if not valid.all():
        np.copyto(data, 0.0, where=~valid)


def _scaled(stored: np.ndarray, plan: ReadPlan) -> np.ndarray:
    """(C, H, W) stored → float32 physical values via float64. Stored integers are scaled straight into a
    float64 array and a float64 read in place: per chip, extra passes and temporaries cost more than the read."""
    scale, shift = (plan.scales != 1).any(), plan.offsets.any()
    physical = stored
    if scale or shift:
        physical = stored if stored.dtype == np.float64 else np.empty(stored.shape, np.float64)
        if scale:
            np.multiply(stored, plan.scales[:, None, None], out=physical)
        if shift:
            np.add(physical if scale else stored, plan.offsets[:, None, None], out=physical)
    if plan.small_integers:  # scaled extremes are finite (read_plan checked): no overflow to silence
        return physical.astype(np.float32)  # unscaled: exact, ≤ 16-bit integers fit float32's mantissa
    with np.errstate(over="ignore", invalid="ignore"):  # overflow → inf → invalid, by design
        return physical.astype(np.float32)
