"""The GeoTIFF chipping benchmark at a tiny size, in-process, so it cannot rot (the full size is run by hand)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from tests.fixtures.paths import REPO

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

BENCH = REPO / "bench" / "ingest_geotiff.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ingest_geotiff_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_scene_is_tiled_compressed_and_chips_like_raw_reads(bench, tmp_path):
    path = tmp_path / "scene.tif"
    written = bench.write_scene(path, width=1100, height=600, bands=2)
    assert written["file_mb"] > 0
    with rasterio.open(path) as src:
        assert src.block_shapes[0] == (bench.TILE, bench.TILE) and src.compression.name == "zstd"
        assert (src.width, src.height, src.count, src.scales) == (1100, 600, 2, (1e-4, 1e-4))
        top = src.read(window=Window(0, 0, 1100, bench.NODATA_ROWS + 1))
        assert not top[:, :bench.NODATA_ROWS].any() and top[:, bench.NODATA_ROWS].all()
        second_tile_row = src.read(1, window=Window(0, bench.TILE, 8, 8))
        np.testing.assert_array_less(999, second_tile_row)
    raw, ours = bench.time_raw(path, 128), bench.time_iter_chips(path, 128)
    assert raw["chips"] == ours["chips"] == (600 // 128) * (1100 // 128)
    assert 0.7 < ours["mean_valid_fraction"] < 1.0
