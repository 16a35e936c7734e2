"""Band counts, dtypes, scale/offset, masks, alpha, overviews, unsupported geometry vs rasterio's own reads."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.enums import ColorInterp
from rasterio.rpc import RPC
from rasterio.windows import Window

from pipeline.io import UnreadableImageError
from pipeline.io.geotiff import READ_VALUES, chip_transform, iter_chips, read_plan, read_scene_info, read_segments
from tests.fixtures.geotiff_files import record_read_windows

pytestmark = pytest.mark.filterwarnings(
    "ignore:Use `@` matmul:PendingDeprecationWarning", "ignore::rasterio.errors.NotGeoreferencedWarning")

CRS = "EPSG:32633"
GRID = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_600_000.0)


def write(path: Path, data: np.ndarray, transform=GRID, crs=CRS, scales=None, offsets=None, colorinterp=None,
          **profile) -> Path:
    """Write (C, H, W) ``data`` as a GeoTIFF with rasterio, optionally with scale/offset and colour interp."""
    count, height, width = data.shape
    with rasterio.open(path, "w", driver=profile.pop("driver", "GTiff"), width=width, height=height, count=count,
                       dtype=data.dtype, crs=crs, transform=transform, **profile) as dst:
        dst.write(data)
        if scales is not None:
            dst.scales, dst.offsets = scales, offsets
        if colorinterp is not None:
            dst.colorinterp = colorinterp
    return path


def direct_chip(src, window: Window, indexes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Reference: rasterio's own window read, scale/offset applied, and its per-band GDAL masks."""
    stored = src.read(indexes, window=window).astype(np.float64)
    scales = np.array([src.scales[i - 1] for i in indexes])[:, None, None]
    offsets = np.array([src.offsets[i - 1] for i in indexes])[:, None, None]
    physical = stored * scales + offsets
    valid = (src.read_masks(indexes, window=window) != 0).all(axis=0) & np.isfinite(physical).all(axis=0)
    return physical, valid


def assert_chips_match_rasterio(path: Path, chip_size: int, indexes: list[int], rtol: float = 1e-6) -> list:
    chips = list(iter_chips(path, chip_size))
    with rasterio.open(path) as src:
        assert len(chips) == (src.height // chip_size) * (src.width // chip_size)
        for chip in chips:
            physical, valid = direct_chip(src, Window(chip.col, chip.row, chip_size, chip_size), indexes)
            assert chip.data.dtype == np.float32 and chip.data.shape == (len(indexes), chip_size, chip_size)
            np.testing.assert_array_equal(chip.valid, valid)
            np.testing.assert_allclose(chip.data[:, valid], physical[:, valid], rtol=rtol)
            assert not chip.data[:, ~valid].any() and np.isfinite(chip.data).all()
            assert chip.valid_fraction == pytest.approx(valid.mean())
    return chips


DTYPES = {  # dtype: (low, high, nodata)
    "uint8": (1, 255, 0), "uint16": (1, 10_000, 0), "int16": (-3000, 3000, -32768),
    "int32": (-100_000, 100_000, -2**31), "uint32": (1, 4_000_000, 0), "float32": (-1.0, 1.0, -9999.0),
    "float64": (-1e6, 1e6, np.nan),
}


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_any_dtype_with_scale_offset_and_nodata(tmp_path, dtype):
    low, high, nodata = DTYPES[dtype]
    rng = np.random.default_rng(0)
    data = (rng.uniform(low, high, size=(5, 40, 48))).astype(dtype)
    data[:, :4] = nodata
    data[2, 20, 30] = nodata
    scales, offsets = (0.5, 1e-4, 2.0, 1.0, 0.01), (0.0, -0.1, 3.0, 0.0, -273.15)
    path = write(tmp_path / f"{dtype}.tif", data, nodata=nodata, scales=scales, offsets=offsets)
    chips = assert_chips_match_rasterio(path, 16, [1, 2, 3, 4, 5])
    assert read_scene_info(path).dtype == dtype
    corner = next(c for c in chips if (c.row, c.col) == (16, 16))
    assert not corner.valid[4, 14] and corner.valid[4, 13]  # nodata in one band invalidates the pixel
    assert chips[0].valid_fraction == pytest.approx(12 / 16)


def test_thirteen_band_sentinel2_like_scene(tmp_path):
    data = np.random.default_rng(1).integers(0, 12_000, size=(13, 32, 32)).astype(np.uint16)
    path = write(tmp_path / "s2.tif", data, nodata=0, scales=(1e-4,) * 13, offsets=(-0.1,) * 13)
    assert_chips_match_rasterio(path, 16, list(range(1, 14)))


@pytest.mark.parametrize("dtype", ["complex64", "complex128", "complex_int16"])
def test_complex_bands_are_read_as_amplitude(tmp_path, dtype):
    path = tmp_path / "slc.tif"
    rng = np.random.default_rng(4)
    values = (rng.integers(-300, 300, (2, 8, 8)) + 1j * rng.integers(-300, 300, (2, 8, 8))).astype(np.complex64)
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=2, dtype=dtype, crs=CRS,
                       transform=GRID) as dst:
        if dtype != "complex_int16":  # GDAL's CInt16 is written as zeros here (rasterio cannot write it)
            dst.write(values.astype(dtype))
    with rasterio.open(path) as src:  # rasterio's own read of the complex samples, independent of ours
        expected = np.abs(src.read(out_dtype="complex128")).astype(np.float32)
    chip = next(iter_chips(path, 8))
    np.testing.assert_allclose(chip.data, expected, rtol=1e-6)
    assert chip.valid.all() and read_scene_info(path).count == 2


def test_float64_beyond_float32_range_is_invalid(tmp_path):
    data = np.ones((1, 8, 8), np.float64)
    data[0, 1, 2] = 1e300
    chip = next(iter_chips(write(tmp_path / "big.tif", data), 8))
    assert not chip.valid[1, 2] and chip.valid.sum() == 63 and chip.data[0, 1, 2] == 0.0


def test_alpha_band_is_validity_not_data(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.integers(1, 255, size=(4, 32, 32)).astype(np.uint8)
    data[3] = 255
    data[3, 5:9, 3:20] = 0
    data[3, 20, 20] = 1  # faint but not transparent: valid, as in GDAL's mask
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    path = write(tmp_path / "rgba.tif", data, colorinterp=interp)
    info = read_scene_info(path)
    assert info.data_bands == (1, 2, 3) and info.alpha_band == 4 and info.count == 4
    chips = assert_chips_match_rasterio(path, 16, [1, 2, 3])
    with rasterio.open(path) as src:
        alpha = src.read(4)
    for chip in chips:
        np.testing.assert_array_equal(chip.valid, alpha[chip.row:chip.row + 16, chip.col:chip.col + 16] > 0)
    assert next(iter_chips(path, 16, bands=[3, 1])).data.shape == (2, 16, 16)
    with pytest.raises(UnreadableImageError, match="rgba.tif: band 4 is an alpha band"):
        next(iter_chips(path, 16, bands=[1, 4]))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NodataShadowWarning")  # the reference read below
def test_alpha_is_honoured_even_when_a_nodata_value_hides_it_from_gdal(tmp_path):
    data = np.full((4, 16, 16), 9, dtype=np.uint16)
    data[3] = 65535
    data[3, 0, :5] = 0  # transparent
    data[:3, 8, 8] = 0  # nodata
    interp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.alpha]
    path = write(tmp_path / "rgba_nodata.tif", data, nodata=0, colorinterp=interp)
    chip = next(iter_chips(path, 16))
    with rasterio.open(path) as src:
        expected = (src.read(4) > 0) & (src.read_masks([1, 2, 3]) != 0).all(axis=0)
    np.testing.assert_array_equal(chip.valid, expected)
    assert (~chip.valid).sum() == 6


def test_sidecar_mask_and_nan_nodata(tmp_path):
    data = np.random.default_rng(3).random((2, 24, 24)).astype(np.float32)
    data[1, 3, 4] = np.nan
    path = write(tmp_path / "nan.tif", data, nodata=np.nan)
    mask = np.full((24, 24), 255, np.uint8)
    mask[10:12, :] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(path, "r+") as dst:
        dst.write_mask(mask)
    assert (tmp_path / "nan.tif.msk").exists()
    chips = assert_chips_match_rasterio(path, 12, [1, 2])
    assert not chips[0].valid[3, 4] and not chips[0].valid[10:12].any()


def test_all_nodata_scene_yields_chips_with_zero_valid_fraction(tmp_path):
    path = write(tmp_path / "empty.tif", np.zeros((2, 16, 32), np.uint16), nodata=0)
    assert [c.valid_fraction for c in iter_chips(path, 16)] == [0.0, 0.0]


def test_rotated_scene_is_rejected(tmp_path):
    rotated = GRID * Affine.rotation(15.0)
    path = write(tmp_path / "rotated.tif", np.ones((1, 8, 8), np.uint8), transform=rotated)
    with pytest.raises(UnreadableImageError, match=r"rotated.tif: rotated or degenerate geotransform.*gdalwarp"):
        read_scene_info(path)
    with pytest.raises(UnreadableImageError, match="rotated.tif: rotated"):
        next(iter_chips(path, 8))


def test_south_up_scene_is_accepted_with_its_own_transform(tmp_path):
    south_up = Affine(10.0, 0.0, 500_000.0, 0.0, 10.0, 4_500_000.0)
    path = write(tmp_path / "south_up.tif", np.arange(64, dtype=np.uint8).reshape(1, 8, 8), transform=south_up)
    chip = list(iter_chips(path, 4))[3]
    assert chip.transform == pytest.approx((10.0, 0.0, 500_040.0, 0.0, 10.0, 4_500_040.0))
    assert chip.data[0, 0, 0] == 36


def test_gcp_only_and_rpc_only_scenes_are_rejected(tmp_path):
    corners = ((0, 0), (0, 8), (8, 0))
    gcps = [GroundControlPoint(row, col, 15 + col / 1e3, 41 - row / 1e3) for row, col in corners]
    path = tmp_path / "gcps.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8", gcps=gcps,
                       crs="EPSG:4326") as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    with pytest.raises(UnreadableImageError, match=r"gcps.tif: georeferenced by 3 GCPs only"):
        next(iter_chips(path, 8))
    one, x, minus_y = ([0.0] * 20 for _ in range(3))  # 20-term RPC polynomials: 1, x (lon), -y (lat)
    one[0], x[1], minus_y[2] = 1.0, 1.0, -1.0
    rpc = RPC(height_off=0, height_scale=100, lat_off=41, lat_scale=0.1, line_den_coeff=one,
              line_num_coeff=minus_y, line_off=4, line_scale=4, long_off=15, long_scale=0.1,
              samp_den_coeff=one, samp_num_coeff=x, samp_off=4, samp_scale=4)
    path = tmp_path / "rpcs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8", rpcs=rpc) as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    with pytest.raises(UnreadableImageError, match=r"rpcs.tif: georeferenced by RPCs only"):
        read_scene_info(path)


@pytest.fixture
def cog(tmp_path) -> Path:
    """A tiled, compressed 3-band uint16 COG (64 px tiles) with nodata, scale/offset and 2 overview levels."""
    data = np.random.default_rng(4).integers(1, 10_000, size=(3, 256, 192)).astype(np.uint16)
    data[:, :20, :] = 0
    return write(tmp_path / "cog.tif", data, nodata=0, scales=(1e-4,) * 3, offsets=(0.0, 0.0, -0.1), driver="COG",
                 blocksize=64, compress="deflate", overview_resampling="average", overviews="AUTO",
                 overview_count=2)


def test_cog_chips_at_full_resolution_and_overviews(cog):
    info = read_scene_info(cog)
    assert info.block_shape == (64, 64) and info.overview_factors == (2, 4)
    assert_chips_match_rasterio(cog, 64, [1, 2, 3])
    with rasterio.open(cog) as src:
        for level, factor in enumerate(info.overview_factors):
            shape = (3, src.height // factor, src.width // factor)
            decimated = src.read(out_shape=shape).astype(np.float64)  # GDAL serves this from the overview
            masks = src.read_masks(out_shape=shape)
            chips = list(iter_chips(cog, 32, overview_level=level))
            assert len(chips) == (shape[1] // 32) * (shape[2] // 32)
            for chip in chips:
                rows, cols = slice(chip.row, chip.row + 32), slice(chip.col, chip.col + 32)
                physical = decimated[:, rows, cols] * 1e-4 - np.array([0, 0, 0.1])[:, None, None]
                valid = (masks[:, rows, cols] != 0).all(axis=0)
                np.testing.assert_array_equal(chip.valid, valid)
                np.testing.assert_allclose(chip.data[:, valid], physical[:, valid], rtol=1e-6)
                corner = Affine.translation(chip.col * factor, chip.row * factor)
                expected = src.transform * corner * Affine.scale(factor)
                assert chip.transform == pytest.approx(tuple(expected)[:6])
    with pytest.raises(UnreadableImageError, match=r"cog.tif: overview_level 2 requested but it has 2 overviews"):
        next(iter_chips(cog, 32, overview_level=2))


def test_overview_reads_are_windowed(cog, monkeypatch):
    windows = record_read_windows(monkeypatch)
    chips = list(iter_chips(cog, 32, overview_level=0))
    with rasterio.open(cog, overview_level=0) as overview:
        assert windows == list(read_segments(overview.height, overview.width, 32, 3))
    assert sum(int(w.width) // 32 for w in windows) == len(chips) and all(w.height == 32 for w in windows)


def test_memory_stays_bounded_by_one_read(tmp_path):
    """Python-side allocations while chipping a 4096² uint16 scene (32 MiB stored, 64 MiB as float32): one
    read of READ_VALUES values (2 MiB as float64 while scaling) plus one chip, whatever the scene size."""
    path = tmp_path / "large.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4096, height=4096, count=1, dtype="uint16", crs=CRS,
                       transform=GRID, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       nodata=0) as dst:
        for row in range(0, 4096, 256):
            block = np.full((1, 256, 4096), row + 1, dtype=np.uint16)
            dst.write(block, window=Window(0, row, 4096, 256))
    tracemalloc.start()
    count = 0
    for chip in iter_chips(path, 128):
        count += 1
        assert chip.data[0, 0, 0] == chip.row // 256 * 256 + 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 1024
    assert peak < 3 * READ_VALUES * 8, f"peak {peak / 2**20:.1f} MiB"  # 6 MiB ≪ the 64 MiB scene


@pytest.mark.parametrize("transform", [GRID, Affine(0.5, 0.0, -180.0, 0.0, 0.25, -90.0),
                                       Affine(30.0, 0.0, 123_456.789, 0.0, -30.0, 9_876_543.21)])
def test_chip_transform_is_rasterio_window_transform_exactly(transform):
    rng = np.random.default_rng(3)
    for row, col in rng.integers(0, 100_000, size=(50, 2)):
        expected = tuple(rasterio.windows.transform(Window(int(col), int(row), 256, 256), transform))[:6]
        assert chip_transform(transform, int(row), int(col)) == expected


@pytest.mark.parametrize(("dtype", "nodata", "as_stored", "nodata_values"), [
    ("uint8", 0, True, (0, 0)), ("uint16", 0, True, (0, 0)), ("int16", -32768, True, (-32768, -32768)),
    ("int32", -2**31, False, (-2**31, -2**31)), ("uint16", None, True, None), ("float32", -9999.0, False, None),
])
def test_read_plan_chooses_the_shortcuts_only_where_they_are_exact(tmp_path, dtype, nodata, as_stored,
                                                                   nodata_values):
    """Stored-value nodata only when GDAL's mask is exactly that comparison (integers); reads as stored only
    for ≤ 16-bit integers. Either way the chips equal rasterio's reads (the dtype tests above)."""
    path = write(tmp_path / "p.tif", np.ones((2, 8, 8), dtype=dtype), nodata=nodata)
    with rasterio.open(path) as src:
        plan = read_plan(src, path)
    assert plan.small_integers == as_stored and plan.nodata_values == nodata_values


def test_masks_and_alpha_keep_gdal_masks(tmp_path):
    data = np.full((2, 8, 8), 7, dtype=np.uint16)
    alpha_path = write(tmp_path / "alpha.tif", data, colorinterp=[ColorInterp.gray, ColorInterp.alpha])
    with rasterio.open(tmp_path / "masked.tif", "w", driver="GTiff", width=8, height=8, count=1, dtype="uint16",
                       crs=CRS, transform=GRID) as dst:
        dst.write(data[:1])
        dst.write_mask(np.eye(8, dtype=np.uint8) * 255)
    for path in (alpha_path, tmp_path / "masked.tif"):
        with rasterio.open(path) as src:
            assert read_plan(src, path).nodata_values is None
    chip = next(iter_chips(tmp_path / "masked.tif", 8))
    np.testing.assert_array_equal(chip.valid, np.eye(8, dtype=bool))
