"""Bands delivered as separate single-band files (Sentinel-2 style) → chips stacked on one reference grid.

Sentinel-2 L1C/L2A products ship B02/B03/B04/B08 at 10 m, B05–B07/B8A/B11/B12 at 20 m and B01/B09/B10 at
60 m, one file per band. A chip must hold every band on the *same* pixel grid, so each band whose grid
differs from the reference band's is read through a ``rasterio.vrt.WarpedVRT`` onto that grid, window by
window: memory stays bounded by one chip per band, as for single scenes (:mod:`pipeline.io.geotiff`).

Policies:

- **reference grid**: the finest selected band (smallest pixel area; first one on ties), or a band named by
  the caller. Its CRS, transform and size define the chips; other bands may even be in another CRS.
- **resampling**: bilinear by default when a band is *upsampled* (coarser band → finer grid), because
  reflectance varies smoothly and nearest-neighbour would leave 2×2 blocks that an encoder can learn as a
  band signature; ``Resampling.average`` when a band is *downsampled*, so it is not aliased. Pass
  ``Resampling.nearest`` for categorical bands (e.g. a scene classification layer).
- **validity**: each warped band carries an alpha band from GDAL's warper (source nodata / mask and the
  source extent), so pixels outside a band's footprint are invalid, not zero. A pixel is valid only when it
  is valid in every band, as in :func:`pipeline.io.geotiff.iter_chips`.
- **scale / offset** tags of each band file are applied; files must be north-up (see geotiff's policies).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT

from pipeline.io import UnreadableImageError
from pipeline.io.geotiff import (GeoChip, affine_tuple, chip_transform, chip_windows, crs_string, open_raster,
                                 read_plan)
from pipeline.io.geotiff_reads import mask_bands_for, one_line, read_window, zero_invalid

log = logging.getLogger(__name__)

BAND_FILE_SUFFIXES = (".tif", ".tiff", ".jp2")
BAND_TOKEN = re.compile(r"(?<![A-Za-z0-9])B(\d{1,2})(A?)(?![0-9])", re.IGNORECASE)
# SAR polarisations as band files name them (Sentinel-1 ``s1a-iw-grd-vv-….tiff``, BigEarthNet ``…_VH.tif``)
POLARISATION_TOKEN = re.compile(r"(?<![A-Za-z0-9])(VV|VH|HH|HV)(?![A-Za-z0-9])", re.IGNORECASE)
POLARISATION_ORDER = ("VV", "VH", "HH", "HV")
# Landsat Collection 2 band files (LC09_…_SR_B5.TIF, …_ST_B10.TIF): their own numbering, not Sentinel-2's
LANDSAT_TOKEN = re.compile(r"(?<![A-Za-z0-9])(SR|ST)_B(\d{1,2})(?![0-9])", re.IGNORECASE)


def band_token(stem: str) -> str | None:
    """The band a file name names: Landsat ``SR_B5`` / ``ST_B10``, Sentinel-2 ``B02`` (``B2`` normalised), ``B8A``,
    or a polarisation ``VV`` … ; else None."""
    landsat = LANDSAT_TOKEN.search(stem)
    if landsat is not None:
        return f"{landsat.group(1).upper()}_B{int(landsat.group(2))}"
    match = BAND_TOKEN.search(stem)
    if match is not None:
        number, suffix = int(match.group(1)), match.group(2).upper()
        return f"B{number}{suffix}" if suffix else f"B{number:02d}"
    match = POLARISATION_TOKEN.search(stem)
    return match.group(1).upper() if match is not None else None


@dataclass(frozen=True)
class BandStack:
    """Single-band files to be stacked, in chip channel order, and the grid they are stacked onto.

    Attributes:
        band_names: channel names, in chip order.
        paths: the file of each channel, same order.
        reference: name of the band whose grid the chips use.
        crs: reference CRS string.
        transform: reference affine ``(a, b, c, d, e, f)``.
        width: reference columns.
        height: reference rows.
    """

    band_names: tuple[str, ...]
    paths: tuple[Path, ...]
    reference: str
    crs: str
    transform: tuple[float, ...]
    width: int
    height: int


def _band_sort_key(name: str) -> tuple[int, str]:
    landsat = LANDSAT_TOKEN.fullmatch(name)
    if landsat:
        return 500 + int(landsat.group(2)) + (100 if landsat.group(1).upper() == "ST" else 0), ""
    match = BAND_TOKEN.fullmatch(name)
    if match:
        return int(match.group(1)), match.group(2).upper()
    return (1_000 + POLARISATION_ORDER.index(name), "") if name in POLARISATION_ORDER else (10_000, name)


def find_band_files(folder: Path, suffixes: Sequence[str] = BAND_FILE_SUFFIXES) -> dict[str, Path]:
    """Band files of one product folder → {band name: path}, in Sentinel-2 order (B01 … B08, B8A, B09…), then
    polarisations (VV, VH, HH, HV).

    The band name is the ``B<n>`` / ``B<n>A`` token of the file name (``T33UUP_20200101_B02_10m.jp2`` →
    ``B02``; ``B2`` is normalised to ``B02``, ``B8A`` stays ``B8A``), or its polarisation token
    (``s1a-iw-grd-vh-….tiff`` → ``VH``). Files without a band token are ignored.

    Raises:
        UnreadableImageError: two files carry the same band token (names the folder and both files).
    """
    folder = Path(folder)
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes):
        name = band_token(path.stem)
        if name is None:
            log.debug("%s: no band token in the file name, ignored", path)
            continue
        if name in found:
            raise UnreadableImageError(f"{folder}: band {name} found twice ({found[name].name}, {path.name})")
        found[name] = path
    return dict(sorted(found.items(), key=lambda item: _band_sort_key(item[0])))


def _resolve(key: str | int, names: list[str], what: str) -> str:
    """A band named or given as a 1-based index into ``names`` → its name."""
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        if not 1 <= key <= len(names):
            raise UnreadableImageError(f"{what}: band index {key} is not in 1..{len(names)} ({names})")
        return names[key - 1]
    if str(key) not in names:
        raise UnreadableImageError(f"{what}: band {key!r} is not one of {names}")
    return str(key)


def _grid(path: Path) -> tuple[str, tuple[float, ...], int, int]:
    """(crs, transform, width, height) of a supported single-band file."""
    with open_raster(path) as src:
        read_plan(src, path)
        if src.count != 1:
            raise UnreadableImageError(f"{path}: a band file must hold 1 band, found {src.count}")
        return crs_string(src), affine_tuple(src.transform), src.width, src.height


def _pixel_area(transform: Sequence[float]) -> float:
    return abs(transform[0] * transform[4])


def plan_band_stack(band_files: Mapping[str, Path], bands: Sequence[str | int] | None = None,
                    reference: str | int | None = None) -> BandStack:
    """Choose the bands (by name or 1-based index into ``band_files``' order) and the reference grid.

    Args:
        band_files: {band name: single-band file}, e.g. from :func:`find_band_files`; its order is what
            1-based indexes refer to.
        bands: the chip channels in order; None takes every band file.
        reference: the band whose grid chips use (name or 1-based index into ``band_files``, selected or
            not); None takes the finest selected band.

    Raises:
        UnreadableImageError: unknown band, a file that is not single-band or not supported, or a band
            without a CRS where it would need reprojecting (names the file or folder).
    """
    names = list(band_files)
    if not names:
        raise UnreadableImageError("band files: none given")
    what = str(Path(band_files[names[0]]).parent)
    chosen = [_resolve(b, names, what) for b in bands] if bands is not None else names
    named_ref = None if reference is None else _resolve(reference, names, what)
    grids = {name: _grid(Path(band_files[name])) for name in dict.fromkeys([*chosen, named_ref or chosen[0]])}
    ref = named_ref or min(chosen, key=lambda name: _pixel_area(grids[name][1]))
    crs, transform, width, height = grids[ref]
    for name in chosen:
        if grids[name] != grids[ref] and not (grids[name][0] and crs):
            raise UnreadableImageError(f"{band_files[name]}: band {name} is not on the grid of reference "
                                       f"band {ref} and one of them has no CRS, so it cannot be reprojected")
    return BandStack(band_names=tuple(chosen), paths=tuple(Path(band_files[n]) for n in chosen),
                     reference=ref, crs=crs, transform=transform, width=width, height=height)


def _on_grid(src, stack: BandStack, resampling: Resampling):
    """None when ``src`` is already on the reference grid, else a WarpedVRT of it onto that grid whose alpha
    band (band 2) marks the pixels the warper could fill from valid source pixels."""
    pixel = max(abs(stack.transform[0]), abs(stack.transform[4]))
    if src.crs and stack.crs:
        same_crs = src.crs == CRS.from_user_input(stack.crs)
    else:
        same_crs = not (src.crs or stack.crs)
    if (same_crs and (src.width, src.height) == (stack.width, stack.height)
            and np.allclose(affine_tuple(src.transform), stack.transform, rtol=0.0, atol=1e-6 * pixel)):
        return None
    downsampled = _pixel_area(affine_tuple(src.transform)) < _pixel_area(stack.transform)
    return WarpedVRT(src, crs=CRS.from_user_input(stack.crs), transform=Affine(*stack.transform),
                     width=stack.width, height=stack.height, add_alpha=True,
                     resampling=Resampling.average if downsampled else resampling)


def _band_readers(files: ExitStack, stack: BandStack, resampling: Resampling) -> list:
    """Per band: (dataset on the reference grid, its ReadPlan, GDAL mask bands to read, path)."""
    readers = []
    for path in stack.paths:
        src = files.enter_context(open_raster(path))
        plan = read_plan(src, path)
        vrt = _on_grid(src, stack, resampling)
        if vrt is not None:
            files.enter_context(vrt)
            plan = plan.for_warped(vrt)
        dataset = vrt if vrt is not None else src
        readers.append((dataset, plan, [] if vrt is not None else mask_bands_for(src, plan), path))
    return readers


def _read_stack_window(readers: list, window) -> tuple[np.ndarray, np.ndarray]:
    data, valid = [], np.ones((int(window.height), int(window.width)), dtype=bool)
    for dataset, plan, mask_bands, path in readers:
        try:
            band, band_valid = read_window(dataset, plan, window, mask_bands)
        except RasterioError as error:
            raise UnreadableImageError(f"{path}: read failed at row {window.row_off}, col {window.col_off} "
                                       f"({one_line(error)})") from error
        data.append(band)
        valid &= band_valid
    stacked = np.concatenate(data, axis=0)
    zero_invalid(stacked, valid)
    return stacked, valid


def iter_stack_chips(stack: BandStack, chip_size: int,
                     resampling: Resampling = Resampling.bilinear) -> Iterator[GeoChip]:
    """Chips of the stacked bands on the reference grid, row-major, partial edge chips skipped.

    Args:
        stack: from :func:`plan_band_stack`.
        chip_size: chip side in reference-grid pixels, > 0.
        resampling: kernel for bands coarser than the reference (bilinear for reflectance, nearest for
            classes); bands finer than the reference are always averaged.

    Yields:
        :class:`GeoChip`: ``data`` (C, chip_size, chip_size) float32 in ``stack.band_names`` order, physical
        units, 0.0 where invalid; ``valid`` is the AND over bands; row/col/transform on the reference grid.

    Raises:
        UnreadableImageError: a band file that cannot be read (names that file).
    """
    if chip_size <= 0:
        raise ValueError(f"chip_size must be > 0, got {chip_size}")
    with ExitStack() as files:
        readers = _band_readers(files, stack, resampling)
        for window in chip_windows(stack.height, stack.width, chip_size):
            data, valid = _read_stack_window(readers, window)
            row, col = int(window.row_off), int(window.col_off)
            yield GeoChip(data=data, valid=valid, row=row, col=col,
                          transform=chip_transform(stack.transform, row, col), crs=stack.crs)
