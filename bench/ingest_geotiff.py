"""GeoTIFF chipping: peak memory and chips per second of ``iter_chips`` against raw rasterio windowed reads.

Writes one large tiled, compressed uint16 scene (default 36000 × 18000 px, 1 band, 512 px tiles, ZSTD with
horizontal predictor, nodata 0 on a top border, scale 1e-4), one row of tiles at a time so the writer itself
stays bounded, then measures in *separate* processes, so that each peak RSS (``resource.getrusage``) is its
own:
  (write) the writer;
  (raw) ``src.read(window=w)`` over every chip window, nothing else;
  (iter_chips) the reader ingest uses: the same windows, float64 scale/offset, GDAL masks, valid mask.
Goal (issue: real-world ingestion): peak RSS of the iter_chips process ≤ 1 GB whatever the scene size.
GDAL's block cache counts towards RSS; it is capped with ``GDAL_CACHEMAX`` (``--cachemax-mb``), as ingest
workers should be.

    python bench/ingest_geotiff.py [--width 36000] [--height 18000] [--bands 1] [--chip 256]
                                   [--cachemax-mb 256]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.io.geotiff import chip_windows, iter_chips  # noqa: E402

TILE = 512
NODATA_ROWS = 100


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tile_row(row: int, height: int, width: int, bands: int, rng: np.random.Generator) -> np.ndarray:
    """(bands, height, width) uint16 reflectance ×10⁴: smooth field + noise, 0 = nodata at the top."""
    rows = np.arange(row, row + height)[:, None]
    cols = np.arange(width)[None, :]
    field = 1000 + (rows // 16 * 7 + cols // 16 * 3) % 4000
    data = np.stack([field + 300 * band + rng.integers(0, 64, size=(height, width)) for band in range(bands)])
    data[:, : max(0, NODATA_ROWS - row)] = 0
    return data.astype(np.uint16)


def write_scene(path: Path, width: int, height: int, bands: int) -> dict:
    """Write the scene one row of tiles at a time; returns seconds, size and the writer's peak RSS."""
    started, rng = time.perf_counter(), np.random.default_rng(0)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": "uint16",
               "crs": "EPSG:32633", "transform": from_origin(300_000, 5_000_000, 10, 10), "nodata": 0,
               "tiled": True, "blockxsize": TILE, "blockysize": TILE, "compress": "zstd", "predictor": 2,
               "bigtiff": "if_safer"}
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, height, TILE):
            rows = min(TILE, height - row)
            dst.write(tile_row(row, rows, width, bands, rng), window=Window(0, row, width, rows))
        dst.scales = (1e-4,) * bands
    return {"write_s": time.perf_counter() - started, "file_mb": path.stat().st_size / 2**20,
            "write_peak_rss_mb": peak_rss_mb()}


def time_raw(path: Path, chip: int) -> dict:
    """Raw rasterio: ``src.read(window=w)`` for every chip window, row-major."""
    started, count = time.perf_counter(), 0
    with rasterio.open(path) as src:
        for window in chip_windows(src.height, src.width, chip):
            src.read(window=window)
            count += 1
    return {"chips": count, "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}


def time_iter_chips(path: Path, chip: int) -> dict:
    """The ingest reader over the same windows; also checks the nodata border is reported invalid."""
    started, count, valid = time.perf_counter(), 0, 0.0
    for geo_chip in iter_chips(path, chip):
        count += 1
        valid += geo_chip.valid_fraction
    return {"chips": count, "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(),
            "mean_valid_fraction": valid / max(count, 1)}


def in_fresh_process(function, *args) -> dict:
    """Run ``function(*args)`` in a new process so its peak RSS is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=36_000)
    parser.add_argument("--height", type=int, default=18_000)
    parser.add_argument("--bands", type=int, default=1)
    parser.add_argument("--chip", type=int, default=256)
    parser.add_argument("--cachemax-mb", type=int, default=256)
    args = parser.parse_args()
    os.environ["GDAL_CACHEMAX"] = str(args.cachemax_mb)  # inherited by the spawned processes
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scene.tif"
        result = {"width": args.width, "height": args.height, "bands": args.bands, "chip": args.chip,
                  "gdal_cachemax_mb": args.cachemax_mb, **in_fresh_process(write_scene, path, args.width,
                                                                          args.height, args.bands)}
        raw = in_fresh_process(time_raw, path, args.chip)
        ours = in_fresh_process(time_iter_chips, path, args.chip)
    assert ours["chips"] == raw["chips"]
    result.update({"chips": raw["chips"], "raw_chips_per_s": raw["chips"] / raw["seconds"],
                   "raw_peak_rss_mb": raw["peak_rss_mb"], "iter_chips_per_s": ours["chips"] / ours["seconds"],
                   "iter_chips_peak_rss_mb": ours["peak_rss_mb"],
                   "mean_valid_fraction": ours["mean_valid_fraction"]})
    result["ratio_iter_chips_vs_raw"] = result["iter_chips_per_s"] / result["raw_chips_per_s"]
    result["peak_rss_goal_met"] = result["iter_chips_peak_rss_mb"] <= 1024
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
