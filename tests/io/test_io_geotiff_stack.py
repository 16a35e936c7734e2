"""Separate single-band files at 10/20/60 m stacked onto one grid, against rasterio reads and reproject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.warp import reproject
from rasterio.windows import Window

from pipeline.io import UnreadableImageError
from pipeline.io.geotiff_stack import find_band_files, iter_stack_chips, plan_band_stack

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

CRS = "EPSG:32633"
ORIGIN = (500_000.0, 4_600_000.0)
SIZE_10M, CHIP = 96, 32
RESOLUTIONS = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B08": 10, "B8A": 20, "B11": 20}
SCALE = 1e-4


def write_band(path: Path, resolution: float, size: int, seed: int, nodata=0, origin=ORIGIN) -> np.ndarray:
    """Write one uint16 reflectance ×10⁴ band; returns the (H, W) stored values."""
    values = np.random.default_rng(seed).integers(100, 9000, size=(size, size)).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint16", crs=CRS,
                       transform=from_origin(*origin, resolution, resolution), nodata=nodata) as dst:
        dst.write(values, 1)
        dst.scales = (SCALE,)
    return values


@pytest.fixture
def product(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """A Sentinel-2-like folder: one file per band, named ``T33UUP_20200101_<band>_<res>m.tif``."""
    stored = {}
    for seed, (band, resolution) in enumerate(RESOLUTIONS.items()):
        size = SIZE_10M * 10 // resolution
        stored[band] = write_band(tmp_path / f"T33UUP_20200101_{band}_{resolution}m.tif", resolution, size, seed)
    (tmp_path / "T33UUP_20200101_TCI.tif").write_bytes(b"")  # no band token: ignored
    (tmp_path / "MTD_MSIL2A.xml").write_text("<xml/>")
    return tmp_path, stored


def reprojected(stored: np.ndarray, resolution: float, grid: Affine, size: int,
                resampling: Resampling) -> np.ndarray:
    """Reference: rasterio.warp.reproject of the whole band onto the reference grid (0 = nodata)."""
    out = np.zeros((size, size), dtype=np.uint16)
    reproject(stored, out, src_transform=from_origin(*ORIGIN, resolution, resolution), src_crs=CRS,
              dst_transform=grid, dst_crs=CRS, resampling=resampling, src_nodata=0, dst_nodata=0)
    return out


def test_band_files_found_in_sentinel2_order(product):
    folder, _ = product
    files = find_band_files(folder)
    assert list(files) == ["B01", "B02", "B03", "B04", "B05", "B08", "B8A", "B11"]
    assert files["B8A"].name == "T33UUP_20200101_B8A_20m.tif"


def test_duplicate_band_is_rejected(product):
    folder, _ = product
    write_band(folder / "other_B2.tif", 10, 8, 0)  # B2 normalises to B02
    with pytest.raises(UnreadableImageError, match="B02 found twice"):
        find_band_files(folder)


def test_stack_on_finest_grid_matches_direct_reads_and_reproject(product):
    folder, stored = product
    stack = plan_band_stack(find_band_files(folder), bands=["B04", "B03", "B02", "B8A", "B01"])
    assert stack.reference == "B04" and stack.band_names == ("B04", "B03", "B02", "B8A", "B01")
    assert (stack.width, stack.height, stack.crs) == (SIZE_10M, SIZE_10M, CRS)
    grid = from_origin(*ORIGIN, 10, 10)
    upsampled = {band: reprojected(stored[band], RESOLUTIONS[band], grid, SIZE_10M, Resampling.bilinear)
                 for band in ("B8A", "B01")}
    chips = list(iter_stack_chips(stack, CHIP))
    assert len(chips) == (SIZE_10M // CHIP) ** 2
    for chip in chips:
        rows, cols = slice(chip.row, chip.row + CHIP), slice(chip.col, chip.col + CHIP)
        window = Window(chip.col, chip.row, CHIP, CHIP)
        with rasterio.open(stack.paths[0]) as src:
            direct = src.read(1, window=window)
            assert chip.transform == pytest.approx(tuple(src.window_transform(window))[:6])
        assert chip.data.shape == (5, CHIP, CHIP) and chip.crs == CRS
        valid = chip.valid
        np.testing.assert_allclose(chip.data[0][valid], direct[valid] * SCALE, rtol=1e-6)
        np.testing.assert_allclose(chip.data[2][valid], stored["B02"][rows, cols][valid] * SCALE, rtol=1e-6)
        covered = (upsampled["B8A"][rows, cols] > 0) & (upsampled["B01"][rows, cols] > 0)
        np.testing.assert_array_equal(valid, covered)
        for channel, band in ((3, "B8A"), (4, "B01")):
            reference = upsampled[band][rows, cols][valid] * SCALE
            # the warper rounds to the band's integer type; windowed and whole-band warps may differ by 1 unit
            np.testing.assert_allclose(chip.data[channel][valid], reference, rtol=0, atol=1.01 * SCALE)
    assert np.mean([c.valid_fraction for c in chips]) == 1.0


def test_named_coarse_reference_averages_finer_bands(product):
    folder, stored = product
    files = find_band_files(folder)
    stack = plan_band_stack(files, bands=[3, 7], reference="B8A")  # 1-based: B03, B8A
    assert stack.band_names == ("B03", "B8A") and (stack.width, stack.transform[0]) == (SIZE_10M // 2, 20.0)
    grid = from_origin(*ORIGIN, 20, 20)
    averaged = reprojected(stored["B03"], 10, grid, SIZE_10M // 2, Resampling.average)
    chip = next(iter_stack_chips(stack, 16))
    assert chip.valid.all()
    np.testing.assert_allclose(chip.data[0], averaged[:16, :16] * SCALE, rtol=0, atol=1.01 * SCALE)
    np.testing.assert_allclose(chip.data[1], stored["B8A"][:16, :16] * SCALE, rtol=1e-6)


def test_nodata_and_footprint_of_coarse_band_invalidate_pixels(tmp_path):
    fine = write_band(tmp_path / "B02.tif", 10, 64, 0)
    coarse = write_band(tmp_path / "B05.tif", 20, 24, 1)  # covers only the top-left 48 × 48 px of B02
    with rasterio.open(tmp_path / "B05.tif", "r+") as dst:
        coarse[5, 6] = 0
        dst.write(coarse, 1)
    stack = plan_band_stack(find_band_files(tmp_path))
    grid = from_origin(*ORIGIN, 10, 10)
    reference = reprojected(coarse, 20, grid, 64, Resampling.bilinear)
    chips = {(c.row, c.col): c for c in iter_stack_chips(stack, 32)}
    for (row, col), chip in chips.items():
        window = reference[row:row + 32, col:col + 32]
        np.testing.assert_array_equal(chip.valid, window > 0)
        np.testing.assert_allclose(chip.data[1][chip.valid], window[chip.valid] * SCALE, rtol=0, atol=1.01 * SCALE)
        np.testing.assert_allclose(chip.data[0][chip.valid], fine[row:row + 32, col:col + 32][chip.valid] * SCALE)
        assert not chip.data[:, ~chip.valid].any()
    assert not chips[(0, 0)].valid[10:12, 12:14].any()  # the nodata 20 m pixel → 2 × 2 at 10 m
    assert chips[(32, 32)].valid_fraction < 0.3


def test_bad_selections_and_files_are_rejected(product, tmp_path):
    folder, _ = product
    files = find_band_files(folder)
    with pytest.raises(UnreadableImageError, match="'B99' is not one of"):
        plan_band_stack(files, bands=["B99"])
    with pytest.raises(UnreadableImageError, match="index 9 is not in 1..8"):
        plan_band_stack(files, bands=[9])
    with pytest.raises(UnreadableImageError, match="index 0"):
        plan_band_stack(files, reference=0)
    two = tmp_path / "two_bands"
    two.mkdir()
    with rasterio.open(two / "B02.tif", "w", driver="GTiff", width=8, height=8, count=2, dtype="uint8",
                       crs=CRS, transform=from_origin(*ORIGIN, 10, 10)) as dst:
        dst.write(np.ones((2, 8, 8), np.uint8))
    with pytest.raises(UnreadableImageError, match=r"B02.tif: a band file must hold 1 band"):
        plan_band_stack(find_band_files(two))
