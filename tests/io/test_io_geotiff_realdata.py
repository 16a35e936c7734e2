"""Every raster of rasterio's own test data: chips equal rasterio's reads, or a one-line rejection naming the file.

The folder (/work/shared/realdata/rasterio_testdata, see its README.md and inventory.csv) is optional: every test
skips cleanly when it is absent.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning
from rasterio.windows import Window

from pipeline.io import UnreadableImageError
from pipeline.io.geotiff import iter_chips, read_scene_info
from tests.fixtures.paths import REALDATA

pytestmark = pytest.mark.filterwarnings(
    "ignore:Use `@` matmul:PendingDeprecationWarning", "ignore::rasterio.errors.NotGeoreferencedWarning")

FOLDER = REALDATA / "rasterio_testdata"
REJECTED = {  # file: what the one-line reason must say
    "RGB.byte.gcp.vrt": "GCPs only", "compdcs.vrt": "GCPs only", "white-gemini-iv.vrt": "GCPs only",
    "RGB.byte.rpc.vrt": "RPCs only", "rotated.tif": "rotated", "corrupt.tif": "read failed at row 512",
}


def inventory() -> list[str]:
    if not (FOLDER / "inventory.csv").exists():
        return ["<absent>"]
    with open(FOLDER / "inventory.csv", newline="") as stream:
        return [row["path"] for row in csv.DictReader(stream) if row["kind"] == "raster"]


def chip_size_for(path: Path) -> int:
    with warnings.catch_warnings(), rasterio.open(path) as src:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return max(1, min(256, src.width, src.height))


def rasterio_reference(src, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """rasterio's own window read of the non-alpha bands, scale/offset applied, valid = every band's GDAL mask."""
    indexes = [i for i, c in enumerate(src.colorinterp, start=1) if c != ColorInterp.alpha]
    stored = src.read(indexes, window=window).astype(np.float64)
    physical = stored * np.array([src.scales[i - 1] for i in indexes])[:, None, None] \
        + np.array([src.offsets[i - 1] for i in indexes])[:, None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NodataShadowWarning)
        valid = (src.read_masks(indexes, window=window) != 0).all(axis=0) & np.isfinite(physical).all(axis=0)
    return physical, valid


@pytest.mark.parametrize("name", inventory())
def test_every_real_raster_is_chipped_exactly_or_rejected_with_a_reason(name):
    if not (FOLDER / "inventory.csv").exists():
        pytest.skip(f"real test data not present: {FOLDER}")
    path = FOLDER / name
    if name in REJECTED:
        with pytest.raises(UnreadableImageError) as caught:
            read_scene_info(path)
            list(iter_chips(path, chip_size_for(path)))
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and "\n" not in message and REJECTED[name] in message
        return
    size = chip_size_for(path)
    chips = list(iter_chips(path, size))
    info = read_scene_info(path)
    assert len(chips) == (info.height // size) * (info.width // size) > 0
    with rasterio.open(path) as src:
        for chip in chips:
            window = Window(chip.col, chip.row, size, size)
            physical, valid = rasterio_reference(src, window)
            np.testing.assert_array_equal(chip.valid, valid)
            np.testing.assert_allclose(chip.data[:, valid], physical[:, valid], rtol=1e-6)
            assert not chip.data[:, ~valid].any() and np.isfinite(chip.data).all()
            assert chip.transform == pytest.approx(tuple(src.window_transform(window))[:6])
            assert chip.crs == info.crs


def require(name: str) -> Path:
    path = FOLDER / name
    if not path.exists():
        pytest.skip(f"real test data not present: {path}")
    return path


def test_alpha_files_give_colour_channels_only():
    for name, expected in (("RGBA.byte.tif", 3), ("RGBA.uint16.tif", 3), ("alpha.tif", 3)):
        path = require(name)
        info = read_scene_info(path)
        assert info.alpha_band == 4 and len(info.data_bands) == expected
        chip = next(iter_chips(path, 128))
        with rasterio.open(path) as src:
            alpha = src.read(4, window=Window(0, 0, 128, 128))
        assert chip.data.shape[0] == expected
        np.testing.assert_array_equal(chip.valid, alpha > 0)


def test_nan_nodata_and_all_nodata_files():
    chips = list(iter_chips(require("float_nan.tif"), 1))  # 3 × 2 px, NaN at row 0, col 2
    with rasterio.open(FOLDER / "float_nan.tif") as src:
        finite = np.isfinite(src.read(1))
    assert [c.valid[0, 0] for c in chips] == finite.ravel().tolist() and not finite.all()
    assert [c.valid_fraction for c in iter_chips(require("float_raster_with_nodata.tif"), 12)][0] < 1.0
    assert {c.valid_fraction for c in iter_chips(require("all-nodata.tif"), 71)} == {0.0}


@pytest.mark.parametrize(("name", "level"), [("cogeo.tif", 0), ("cogeo.tif", 3), ("green.tif", 1)])
def test_internal_and_external_overviews(name, level):
    path = require(name)
    info = read_scene_info(path)
    factor = info.overview_factors[level]
    size = min(128, info.width // factor)
    chips = list(iter_chips(path, size, overview_level=level))
    with rasterio.open(path) as src:
        shape = (src.count, src.height // factor, src.width // factor)
        decimated, masks = src.read(out_shape=shape), src.read_masks(out_shape=shape)
    assert len(chips) == (shape[1] // size) * (shape[2] // size)
    for chip in chips:
        rows, cols = slice(chip.row, chip.row + size), slice(chip.col, chip.col + size)
        valid = (masks[:, rows, cols] != 0).all(axis=0)
        np.testing.assert_array_equal(chip.valid, valid)
        np.testing.assert_array_equal(chip.data[:, valid], decimated[:, rows, cols][:, valid].astype(np.float32))
        assert chip.transform[0] == pytest.approx(info.transform[0] * factor)


def test_corrupt_overview_is_still_readable_but_full_resolution_is_rejected():
    path = require("corrupt.tif")
    assert len(list(iter_chips(path, 128, overview_level=0))) == 16
    with pytest.raises(UnreadableImageError, match=r"corrupt.tif: read failed"):
        list(iter_chips(path, 512))
