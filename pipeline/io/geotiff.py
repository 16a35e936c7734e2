"""GeoTIFF scene → fixed-size chips in physical units, with a valid mask, CRS and per-chip affine transform.

Scenes are read with windowed reads, one chip at a time, so memory stays bounded by one chip whatever the
scene size (DOMAIN.md §4); a cloud-optimised GeoTIFF's internal tiles make each read touch few blocks.

Validity follows GDAL's mask semantics via rasterio's ``read_masks`` (nodata value, alpha band, internal or
sidecar ``.msk`` mask), plus non-finite values: a pixel is valid only when it is valid in *every* band read.
Invalid pixels are set to 0.0 in the chip data, so stray NaNs never reach a loss; callers use ``valid``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from pipeline.io import UnreadableImageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneInfo:
    """Header of one GeoTIFF scene, read without touching pixel data.

    Attributes:
        path: the file.
        width: columns (pixels).
        height: rows (pixels).
        count: number of bands.
        dtype: stored data type of band 1 (e.g. ``uint16``).
        crs: CRS as a string (``EPSG:32618`` or WKT); ``""`` when the scene is not georeferenced.
        transform: affine coefficients ``(a, b, c, d, e, f)``: x = a·col + b·row + c, y = d·col + e·row + f.
        nodata: nodata value, or None.
        band_names: per-band description, ``band_<i>`` (1-based) where the file has none.
        scales: per-band scale; physical value = stored · scale + offset.
        offsets: per-band offset.
    """

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: str
    transform: tuple[float, ...]
    nodata: float | None
    band_names: tuple[str, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]


@dataclass(frozen=True)
class GeoChip:
    """One chip of a scene.

    Attributes:
        data: (C, H, W) float32 in physical units (scale/offset applied, e.g. reflectance); 0.0 where invalid.
        valid: (H, W) bool, False where any band is nodata, masked or NaN/inf.
        row: row offset of the chip's top-left pixel in the scene.
        col: column offset of the chip's top-left pixel in the scene.
        transform: the chip's own affine ``(a, b, c, d, e, f)`` (``rasterio.windows.transform``).
    """

    data: np.ndarray
    valid: np.ndarray
    row: int
    col: int
    transform: tuple[float, ...]


def _open(path: Path) -> rasterio.DatasetReader:
    try:
        return rasterio.open(path)
    except RasterioError as error:
        raise UnreadableImageError(f"{path}: not a readable raster ({error})") from error


def _affine(transform) -> tuple[float, ...]:
    return tuple(float(v) for v in tuple(transform)[:6])


def _scene_info(src: rasterio.DatasetReader, path: Path) -> SceneInfo:
    names = tuple(desc or f"band_{i}" for i, desc in enumerate(src.descriptions, start=1))
    return SceneInfo(
        path=path, width=src.width, height=src.height, count=src.count, dtype=str(src.dtypes[0]),
        crs=src.crs.to_string() if src.crs else "", transform=_affine(src.transform),
        nodata=None if src.nodata is None else float(src.nodata), band_names=names,
        scales=tuple(float(s) for s in src.scales), offsets=tuple(float(o) for o in src.offsets),
    )


def read_scene_info(path: Path) -> SceneInfo:
    """Read a scene's header (size, bands, CRS, transform, nodata, scale/offset) without its pixels.

    Raises:
        UnreadableImageError: the file is missing or not a raster GDAL can open.
    """
    path = Path(path)
    with _open(path) as src:
        info = _scene_info(src, path)
    if not info.crs:
        log.warning("%s has no CRS: chip transforms are pixel coordinates only", path)
    return info


def _band_indexes(bands: Sequence[int] | None, count: int, path: Path) -> list[int]:
    if bands is None:
        return list(range(1, count + 1))
    indexes = [int(b) for b in bands]
    if not indexes or any(not 1 <= b <= count for b in indexes):
        raise UnreadableImageError(f"{path}: bands {indexes} are not 1-based indexes into its {count} bands")
    return indexes


def _read_window(src: rasterio.DatasetReader, indexes: list[int], window: Window,
                 scales: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One window → ((C, H, W) float32 physical values, 0.0 where invalid; (H, W) bool valid)."""
    stored = src.read(indexes, window=window).astype(np.float64)  # float64 so scale·x + offset rounds once
    data = (stored * scales[:, None, None] + offsets[:, None, None]).astype(np.float32)
    valid = (src.read_masks(indexes, window=window) != 0).all(axis=0) & np.isfinite(data).all(axis=0)
    data[:, ~valid] = 0.0
    return data, valid


def iter_chips(path: Path, chip_size: int, bands: Sequence[int] | None = None) -> Iterator[GeoChip]:
    """Cut a scene into a non-overlapping ``chip_size`` grid, read window by window (bounded memory).

    Chips are yielded row-major from the top-left. Partial chips at the right and bottom edges are skipped,
    so every chip is exactly (chip_size, chip_size); a scene smaller than one chip yields nothing.

    Args:
        path: a GeoTIFF (any raster GDAL reads).
        chip_size: chip side in pixels, > 0.
        bands: 1-based band indexes to read, in this order; None reads all bands.

    Yields:
        :class:`GeoChip` with ``data`` (C, chip_size, chip_size) float32 in physical units.

    Raises:
        UnreadableImageError: unreadable file, bad band indexes, or a read error part-way (names the file).
    """
    path = Path(path)
    if chip_size <= 0:
        raise ValueError(f"chip_size must be > 0, got {chip_size}")
    with _open(path) as src:
        indexes = _band_indexes(bands, src.count, path)
        scales = np.array([src.scales[i - 1] for i in indexes], dtype=np.float64)
        offsets = np.array([src.offsets[i - 1] for i in indexes], dtype=np.float64)
        if src.height < chip_size or src.width < chip_size:
            log.info("%s (%dx%d px) is smaller than one %d px chip", path, src.width, src.height, chip_size)
        for row in range(0, src.height - chip_size + 1, chip_size):
            for col in range(0, src.width - chip_size + 1, chip_size):
                window = Window(col, row, chip_size, chip_size)
                try:
                    data, valid = _read_window(src, indexes, window, scales, offsets)
                except RasterioError as error:
                    raise UnreadableImageError(
                        f"{path}: read failed at row {row}, col {col} ({error})") from error
                yield GeoChip(data=data, valid=valid, row=row, col=col,
                              transform=_affine(window_transform(window, src.transform)))


def _check_same_grid(src: rasterio.DatasetReader, scene: SceneInfo, mask_path: Path) -> None:
    if (src.width, src.height) != (scene.width, scene.height):
        raise UnreadableImageError(f"{mask_path}: label raster is {src.width}x{src.height} px but scene "
                                   f"{scene.path.name} is {scene.width}x{scene.height} px")
    pixel = max(abs(scene.transform[0]), abs(scene.transform[4]), 1e-12)
    if not np.allclose(_affine(src.transform), scene.transform, rtol=0.0, atol=1e-6 * pixel):
        raise UnreadableImageError(f"{mask_path}: label raster transform {_affine(src.transform)} differs "
                                   f"from scene {scene.path.name} {scene.transform}")
    crs = src.crs.to_string() if src.crs else ""
    if crs and scene.crs and src.crs != CRS.from_user_input(scene.crs):
        raise UnreadableImageError(f"{mask_path}: label raster CRS {crs} differs from scene CRS {scene.crs}")


def read_label_chip(mask_path: Path, row: int, col: int, chip_size: int,
                    scene: SceneInfo | None = None) -> np.ndarray:
    """Read the class labels under one chip from a single-band class raster on the scene's pixel grid.

    Args:
        mask_path: single-band raster of class ids.
        row: chip top-left row in the scene (``GeoChip.row``).
        col: chip top-left column in the scene (``GeoChip.col``).
        chip_size: chip side in pixels.
        scene: the scene the chip came from; when given, the label raster must have the same size, transform
            and CRS, so labels cannot silently shift by a few pixels. Pass it whenever it is at hand.

    Returns:
        (chip_size, chip_size) array of class ids in the raster's own dtype (nodata values are returned as
        stored; the caller decides what they mean).

    Raises:
        UnreadableImageError: unreadable file, more than one band, a different grid, or a window outside it.
    """
    mask_path = Path(mask_path)
    with _open(mask_path) as src:
        if src.count != 1:
            raise UnreadableImageError(f"{mask_path}: label raster must have 1 band, found {src.count}")
        if scene is not None:
            _check_same_grid(src, scene, mask_path)
        if row < 0 or col < 0 or row + chip_size > src.height or col + chip_size > src.width:
            raise UnreadableImageError(f"{mask_path}: chip at row {row}, col {col} (size {chip_size}) lies "
                                       f"outside the {src.width}x{src.height} px label raster")
        return src.read(1, window=Window(col, row, chip_size, chip_size))
