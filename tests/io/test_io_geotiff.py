"""GeoTIFF chips against direct rasterio windowed reads on small generated scenes (and a real one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from pipeline.io import UnreadableImageError
from pipeline.io.geotiff import chip_windows, iter_chips, read_scene_info, read_segments
from pipeline.io.geotiff_masks import read_label_chip
from tests.fixtures import paths
from tests.fixtures.geotiff_files import record_read_windows

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")  # affine, via rasterio

REALDATA = paths.REALDATA / "rasterio_testdata"
CRS = "EPSG:32633"
TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_600_000.0)  # 10 m pixels, north-up
HEIGHT, WIDTH, CHIP = 70, 90, 32
SCALES, OFFSETS = (1e-4, 1e-4, 1e-4, 2e-4), (0.0, 0.0, 0.0, -0.1)


def write_raster(path: Path, data: np.ndarray, nodata=None, transform=TRANSFORM, crs=CRS, **profile) -> Path:
    """Write (C, H, W) ``data`` as a GeoTIFF with rasterio."""
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype,
                       crs=crs, transform=transform, nodata=nodata, **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture
def uint16_scene(tmp_path) -> tuple[Path, np.ndarray]:
    """4-band uint16 reflectance ×10⁴ with a nodata=0 border and one pixel 0 in band 2 only."""
    rng = np.random.default_rng(0)
    data = rng.integers(1, 10_000, size=(4, HEIGHT, WIDTH)).astype(np.uint16)
    data[:, :3, :] = 0
    data[:, :, -5:] = 0
    data[1, 40, 10] = 0
    path = write_raster(tmp_path / "scene.tif", data, nodata=0)
    with rasterio.open(path, "r+") as dst:
        dst.scales, dst.offsets = SCALES, OFFSETS
        for band, name in enumerate(("B02", "B03", "B04", "B08"), start=1):
            dst.set_band_description(band, name)
    return path, data


def expected_offsets(height: int, width: int, size: int) -> set[tuple[int, int]]:
    return {(r * size, c * size) for r in range(height // size) for c in range(width // size)}


def test_scene_info(uint16_scene):
    path, _ = uint16_scene
    info = read_scene_info(path)
    assert (info.width, info.height, info.count, info.dtype) == (WIDTH, HEIGHT, 4, "uint16")
    assert info.crs == CRS and info.nodata == 0.0
    assert info.transform == pytest.approx(tuple(TRANSFORM)[:6])
    assert info.band_names == ("B02", "B03", "B04", "B08")
    assert info.scales == pytest.approx(SCALES) and info.offsets == pytest.approx(OFFSETS)


def test_chips_equal_direct_windowed_reads(uint16_scene):
    path, raw = uint16_scene
    chips = list(iter_chips(path, CHIP))
    assert {(c.row, c.col) for c in chips} == expected_offsets(HEIGHT, WIDTH, CHIP)  # partial edges skipped
    with rasterio.open(path) as src:
        for chip in chips:
            window = Window(chip.col, chip.row, CHIP, CHIP)
            direct = src.read(window=window).astype(np.float64)
            physical = direct * np.array(SCALES)[:, None, None] + np.array(OFFSETS)[:, None, None]
            valid = (direct != 0).all(axis=0)
            assert chip.data.shape == (4, CHIP, CHIP) and chip.data.dtype == np.float32
            np.testing.assert_array_equal(chip.valid, valid)
            np.testing.assert_allclose(chip.data[:, valid], physical[:, valid], rtol=1e-6, atol=1e-7)
            assert not chip.data[:, ~valid].any()  # invalid pixels are 0.0
            assert chip.transform == pytest.approx(tuple(window_transform(window, src.transform))[:6])
    corner = next(c for c in chips if (c.row, c.col) == (32, 0))
    assert not corner.valid[40 - 32, 10]  # zero in one band only still invalidates the pixel


def test_band_selection_keeps_order(uint16_scene):
    path, raw = uint16_scene
    chip = next(iter_chips(path, CHIP, bands=[4, 1]))
    valid = (raw[:, :CHIP, :CHIP] != 0).all(axis=0)
    np.testing.assert_array_equal(chip.valid, valid)
    np.testing.assert_allclose(chip.data[0][valid], raw[3, :CHIP, :CHIP][valid] * 2e-4 - 0.1, rtol=1e-6)
    np.testing.assert_allclose(chip.data[1][valid], raw[0, :CHIP, :CHIP][valid] * 1e-4, rtol=1e-6)
    with pytest.raises(UnreadableImageError, match="scene.tif"):
        next(iter_chips(path, CHIP, bands=[5]))


def test_reads_are_windowed_never_the_whole_scene(uint16_scene, monkeypatch):
    path, _ = uint16_scene
    windows = record_read_windows(monkeypatch)
    chips = list(iter_chips(path, CHIP))
    assert windows == list(read_segments(HEIGHT, WIDTH, CHIP, 4))  # one chip row high, whole chips wide
    assert all(w is not None and w.height == CHIP and w.width % CHIP == 0 for w in windows)
    assert sum(int(w.width) // CHIP for w in windows) == len(chips) == (HEIGHT // CHIP) * (WIDTH // CHIP)


@pytest.mark.parametrize(("chip", "channels", "chips_per_read"), [(16, 4, 256), (64, 4, 16), (128, 1, 16),
                                                                  (128, 4, 1), (256, 1, 1), (256, 13, 1)])
def test_small_chips_are_read_several_at_a_time_in_chip_order(chip, channels, chips_per_read):
    width, height = 70 * chip + 5, 3 * chip + 1
    segments = list(read_segments(height, width, chip, channels))
    assert all(s.width <= chips_per_read * chip for s in segments)
    assert max(s.width for s in segments) == min(chips_per_read, 70) * chip  # 70 whole chips per row
    cut = [Window(s.col_off + k, s.row_off, chip, chip) for s in segments for k in range(0, s.width, chip)]
    assert cut == list(chip_windows(height, width, chip))


def test_float_scene_with_nan_and_no_nodata(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.random((2, 40, 40)).astype(np.float32)
    data[0, 5:9, 7] = np.nan
    data[1, 30, 30] = np.inf
    path = write_raster(tmp_path / "float.tif", data)
    chips = {(c.row, c.col): c for c in iter_chips(path, 20)}
    assert set(chips) == expected_offsets(40, 40, 20)
    for (row, col), chip in chips.items():
        window = data[:, row:row + 20, col:col + 20]
        valid = np.isfinite(window).all(axis=0)
        np.testing.assert_array_equal(chip.valid, valid)
        np.testing.assert_array_equal(chip.data[:, valid], window[:, valid])
        assert np.isfinite(chip.data).all()
    assert (~chips[(0, 0)].valid).sum() == 4 and (~chips[(20, 20)].valid).sum() == 1


def test_internal_mask_is_honoured(tmp_path):
    data = np.full((3, 16, 16), 7, dtype=np.uint8)
    path = write_raster(tmp_path / "masked.tif", data)
    mask = np.full((16, 16), 255, dtype=np.uint8)
    mask[2:5, 3:9] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        dst.write_mask(mask)
    chip = next(iter_chips(path, 16))
    np.testing.assert_array_equal(chip.valid, mask != 0)


def test_scene_smaller_than_a_chip_yields_nothing(uint16_scene):
    path, _ = uint16_scene
    assert list(iter_chips(path, 128)) == []


def test_label_chip(uint16_scene, tmp_path):
    path, _ = uint16_scene
    labels = (np.arange(HEIGHT * WIDTH) % 5).astype(np.uint8).reshape(1, HEIGHT, WIDTH)
    mask_path = write_raster(tmp_path / "labels.tif", labels)
    info = read_scene_info(path)
    for chip in iter_chips(path, CHIP):
        got = read_label_chip(mask_path, chip.row, chip.col, CHIP, scene=info)
        np.testing.assert_array_equal(got, labels[0, chip.row:chip.row + CHIP, chip.col:chip.col + CHIP])
    assert got.dtype == np.uint8


def test_label_chip_errors(uint16_scene, tmp_path):
    path, _ = uint16_scene
    labels = np.zeros((1, HEIGHT, WIDTH), dtype=np.uint8)
    small = write_raster(tmp_path / "small.tif", labels[:, :40, :40])
    with pytest.raises(UnreadableImageError, match="small.tif.*outside"):
        read_label_chip(small, 32, 0, CHIP)
    two_bands = write_raster(tmp_path / "two.tif", np.zeros((2, HEIGHT, WIDTH), dtype=np.uint8))
    with pytest.raises(UnreadableImageError, match="two.tif.*1 band"):
        read_label_chip(two_bands, 0, 0, CHIP)


def test_a_label_raster_on_another_grid_is_resampled_by_nearest_neighbour(uint16_scene, tmp_path):
    """Land-cover products come at their own resolution and extent: 30 m classes under a 10 m scene."""
    from rasterio.warp import Resampling, reproject
    path, _ = uint16_scene
    info = read_scene_info(path)
    coarse = np.random.default_rng(5).integers(0, 6, (1, HEIGHT // 3 + 1, WIDTH // 3 + 1)).astype(np.uint8)
    origin = from_origin(info.transform[2] - 5, info.transform[5] + 5, 30, 30)  # shifted half a 10 m pixel
    labels = write_raster(tmp_path / "landcover.tif", coarse, transform=origin)
    expected = np.full((HEIGHT, WIDTH), 255, np.uint8)  # rasterio's own warp onto the scene grid
    reproject(coarse[0], expected, src_transform=origin, src_crs=CRS, dst_transform=Affine(*info.transform),
              dst_crs=CRS, resampling=Resampling.nearest, dst_nodata=255)
    for row, col in ((0, 0), (32, 48)):
        np.testing.assert_array_equal(read_label_chip(labels, row, col, CHIP, scene=info),
                                      expected[row:row + CHIP, col:col + CHIP])
    assert set(np.unique(read_label_chip(labels, 32, 48, CHIP, scene=info))) <= set(range(6)) | {255}


def test_unreadable_files_raise_naming_file(tmp_path):
    text = tmp_path / "not_a_raster.tif"
    text.write_text("hello")
    with pytest.raises(UnreadableImageError, match="not_a_raster.tif"):
        read_scene_info(text)
    with pytest.raises(UnreadableImageError, match="not_a_raster.tif"):
        next(iter_chips(text, 8))
    with pytest.raises(UnreadableImageError, match="absent.tif"):
        read_scene_info(tmp_path / "absent.tif")


def test_real_rgb_byte_with_nodata():
    path = REALDATA / "RGB.byte.tif"
    if not path.exists():
        pytest.skip(f"real GeoTIFF not present: {path}")
    info = read_scene_info(path)
    assert info.crs == "EPSG:32618" and info.nodata == 0.0 and info.count == 3
    chips = list(iter_chips(path, 256))
    assert {(c.row, c.col) for c in chips} == expected_offsets(info.height, info.width, 256)
    with rasterio.open(path) as src:
        for chip in chips:
            window = Window(chip.col, chip.row, 256, 256)
            direct = src.read(window=window)
            valid = (direct != 0).all(axis=0)  # nodata = 0 in any band
            np.testing.assert_array_equal(chip.valid, valid)
            np.testing.assert_array_equal(chip.data[:, valid], direct[:, valid].astype(np.float32))
            assert chip.transform == pytest.approx(tuple(window_transform(window, src.transform))[:6])
    assert 0.0 < np.mean([c.valid.mean() for c in chips]) < 1.0


def test_scene_info_data_bands_and_chip_crs(uint16_scene):
    path, raw = uint16_scene
    info = read_scene_info(path)
    assert info.data_bands == (1, 2, 3, 4) and info.alpha_band is None and info.overview_factors == ()
    chip = next(iter_chips(path, CHIP))
    assert chip.crs == CRS
    assert chip.valid_fraction == pytest.approx((raw[:, :CHIP, :CHIP] != 0).all(axis=0).mean())
