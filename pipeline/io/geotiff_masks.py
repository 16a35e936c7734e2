"""Class rasters (segmentation labels) read under a scene's chips: on the scene's own pixel grid, or on another
grid (land-cover products often have another resolution, extent or CRS) warped onto it once per scene by
nearest neighbour, so class ids are never averaged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from pipeline.io import UnreadableImageError
from pipeline.io.geotiff import SceneInfo, affine_tuple, crs_string, open_raster
from pipeline.io.geotiff_reads import one_line


def _same_grid(src, scene: SceneInfo) -> bool:
    pixel = max(abs(scene.transform[0]), abs(scene.transform[4]), 1e-12)
    crs = crs_string(src)
    return ((src.width, src.height) == (scene.width, scene.height)
            and np.allclose(affine_tuple(src.transform), scene.transform, rtol=0.0, atol=1e-6 * pixel)
            and (not crs or not scene.crs or src.crs == CRS.from_user_input(scene.crs)))


def _on_scene_grid(src, scene: SceneInfo, mask_path: Path):
    """A WarpedVRT of a class raster onto the scene's grid by nearest neighbour (class ids are not averaged).
    The source's nodata value passes through as stored, as on the scene's own grid; pixels the raster does not
    cover read 255, "ignore"."""
    if not crs_string(src) or not scene.crs:
        raise UnreadableImageError(f"{mask_path}: label raster is on another grid than scene {scene.path.name} "
                                   "and one of them has no CRS, so it cannot be resampled onto the scene")
    return WarpedVRT(src, crs=scene.crs, transform=Affine(*scene.transform[:6]), width=scene.width,
                     height=scene.height, resampling=Resampling.nearest, src_nodata=None, nodata=255)


class LabelRaster:
    """A class raster opened once for a whole scene (and, on another grid, warped onto it once): ``read`` gives
    the labels under one chip. Use as a context manager, or call ``close``."""

    def __init__(self, mask_path: Path, scene: SceneInfo | None = None) -> None:
        self.path = Path(mask_path)
        self.src = open_raster(self.path)
        if self.src.count != 1:
            self.src.close()
            raise UnreadableImageError(f"{self.path}: label raster must have 1 band, found {self.src.count}")
        try:
            self.view = _on_scene_grid(self.src, scene, self.path) if scene is not None and not _same_grid(
                self.src, scene) else None
        except Exception:
            self.src.close()
            raise

    def read(self, row: int, col: int, chip_size: int) -> np.ndarray:
        """(chip_size, chip_size) class ids under the chip whose top-left pixel is (row, col) in the scene."""
        dataset = self.view or self.src
        if self.view is None and (row < 0 or col < 0 or row + chip_size > self.src.height
                                  or col + chip_size > self.src.width):
            raise UnreadableImageError(f"{self.path}: chip at row {row}, col {col} (size {chip_size}) lies "
                                       f"outside the {self.src.width}x{self.src.height} px label raster")
        try:
            return dataset.read(1, window=Window(col, row, chip_size, chip_size))
        except RasterioError as error:
            raise UnreadableImageError(
                f"{self.path}: read failed at row {row}, col {col} ({one_line(error)})") from error

    def close(self) -> None:
        if self.view is not None:
            self.view.close()
        self.src.close()

    def __enter__(self) -> LabelRaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_label_chip(mask_path: Path, row: int, col: int, chip_size: int,
                    scene: SceneInfo | None = None) -> np.ndarray:
    """Read the class labels under one chip from a single-band class raster on the scene's pixel grid.

    Args:
        mask_path: single-band raster of class ids.
        row: chip top-left row in the scene (``GeoChip.row``).
        col: chip top-left column in the scene (``GeoChip.col``).
        chip_size: chip side in pixels.
        scene: the scene the chip came from; a label raster on another grid (land-cover products often have
            another resolution, extent or CRS) is resampled onto the scene's grid by nearest neighbour, pixels it
            does not cover reading 255 ("ignore"). Pass it whenever it is at hand.

    Returns:
        (chip_size, chip_size) array of class ids in the raster's own dtype (nodata values are returned as
        stored; the caller decides what they mean).

    Raises:
        UnreadableImageError: unreadable file, more than one band, another grid without a CRS to resample
            by, or (same grid) a window outside it.
    """
    with LabelRaster(mask_path, scene) as labels:
        return labels.read(row, col, chip_size)
