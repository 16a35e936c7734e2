"""GeoTIFF ingest: value range, bands by name, band folders, GeoJSON labels, GDAL cache — against rasterio reads.

Every fixture is generated here with rasterio in ``tmp_path``; expected chips come from rasterio's own reads
(``read``, ``read_masks``, ``warp.reproject``) and numpy, never from the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.warp import reproject
from rasterio.warp import transform as transform_points

from pipeline.config import ConfigError, parse_config
from pipeline.ingest import geotiff_source
from pipeline.ingest.folder import IngestError
from pipeline.data.chips import load_chipset
from pipeline.demo.remote import RemoteDemoSpec, write_remote_demo
from pipeline.ingest.scenes import GDAL_CACHE_BYTES
from pipeline.ingest.geotiff_source import list_geotiff_files
from tests.fixtures.geotiff_files import (CHIP, CRS, GRID, REPO, SCALE, config, ingest, reflectance, rejected, window_of, write_raster)
from tests.fixtures.stored import STORED_ATOL, as_stored

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

# --- 2. value range ----------------------------------------------------------------------------------

def test_unit_value_range_is_byte_identical_to_clipped_reflectance(tmp_path):
    """value_range [0, 1] on the demo (uint16, scale 1e-4) is exactly np.clip(physical, 0, 1)."""
    source = tmp_path / "demo"
    write_remote_demo(source, RemoteDemoSpec(scenes=1, scene_size=128), seed=2)
    ingest(source, tmp_path / "out", config(min_valid_fraction=0.0, value_range=[0, 1]))
    chips = load_chipset(tmp_path / "out")
    assert len(chips.manifest) == 16
    for row in chips.manifest:
        with rasterio.open(source / row["source"]) as src:
            stored = src.read(window=window_of(row)).astype(np.float64)
            physical = (stored * np.array(src.scales)[:, None, None]
                        + np.array(src.offsets)[:, None, None]).astype(np.float32)
            valid = (src.read_masks(window=window_of(row)) != 0).all(axis=0)
        physical[:, ~valid] = 0.0
        old = np.clip(physical, 0.0, 1.0)
        assert chips.images[int(row["chip_id"])].tobytes() == as_stored(old).tobytes()
        assert np.array_equal(chips.valid[int(row["chip_id"])], valid)


def test_default_value_range_is_each_channels_train_split_percentiles(tmp_path):
    source = tmp_path / "demo"
    write_remote_demo(source, RemoteDemoSpec(scenes=2, scene_size=128), seed=3)
    report = ingest(source, tmp_path / "out", config())
    chips = load_chipset(tmp_path / "out")
    physical = {}
    for row in chips.manifest:  # reference: rasterio's own reads, scaled, and numpy percentiles
        with rasterio.open(source / row["source"]) as src:
            stored = src.read(window=window_of(row)).astype(np.float64)
            valid = (src.read_masks(window=window_of(row)) != 0).all(axis=0)
            physical[int(row["chip_id"])] = (stored * np.array(src.scales)[:, None, None], valid)
    train = [physical[i] for i in np.flatnonzero(chips.split == "train")]
    pixels = np.concatenate([data[:, valid] for data, valid in train], axis=1)
    low, high = np.percentile(pixels, [1, 99], axis=1)
    for i, (data, valid) in physical.items():
        expected = np.clip((data - low[:, None, None]) / (high - low)[:, None, None], 0, 1) * valid
        np.testing.assert_allclose(chips.images[i], expected, atol=STORED_ATOL)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    (group,) = stats["value_range"]["groups"]
    assert group == "uint16 x0.0001"  # the demo's stored type and scale
    fitted = stats["value_range"]["groups"][group]
    np.testing.assert_allclose([fitted["channels"][n] for n in chips.channel_names],
                               np.stack([low, high], axis=1), rtol=1e-5)
    assert fitted["from"] == "train split: p1-p99 of valid pixels" and report["value_range"] == stats["value_range"]
    clipped = fitted["clipped"]["red"]
    assert 0.005 < clipped["low"] < 0.03 and 0.005 < clipped["high"] < 0.03  # ~1 % each, over all splits


def test_uint8_rgba_maps_255_to_one_and_alpha_is_a_mask_not_a_channel(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(4, 64, 64)).astype(np.uint8)
    data[3] = 255
    data[3, :8, :20] = 0  # transparent corner
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    path = write_raster(tmp_path / "src" / "photo.tif", data, descriptions=["red", "green", "blue"],
                        colorinterp=interp)
    ingest(tmp_path / "src", tmp_path / "out", config(value_range=[0, 255]))
    chips = load_chipset(tmp_path / "out")
    assert chips.channel_names == ["blue", "green", "red"]  # the domain's band set, in wavelength order
    with rasterio.open(path) as src:
        assert src.colorinterp[3] == ColorInterp.alpha
        for row in chips.manifest:
            rgb = src.read([3, 2, 1], window=window_of(row)).astype(np.float32)
            alpha = src.read(4, window=window_of(row))
            i = int(row["chip_id"])
            np.testing.assert_array_equal(chips.valid[i], alpha > 0)
            np.testing.assert_allclose(chips.images[i][:, alpha > 0], (rgb / 255)[:, alpha > 0], rtol=1e-6, atol=STORED_ATOL)
            assert not chips.images[i][:, alpha == 0].any()


@pytest.mark.parametrize("dtype, values", [("uint16", (300, 4000)), ("int16", (-2000, 3000)),
                                           ("float32", (-30.0, -5.0)), ("float64", (1.0, 2046.0)),
                                           ("uint8", (10, 240))])
def test_any_dtype_ingests_with_the_default_range_and_nothing_saturates(tmp_path, dtype, values):
    """Unscaled 16-bit digital numbers, int16, SAR-like dB and float64 1 … 2046 were rejected or saturated."""
    rng = np.random.default_rng(7)
    data = rng.uniform(*values, size=(2, 64, 64)).astype(dtype)
    write_raster(tmp_path / "src" / "scene.tif", data)
    report = ingest(tmp_path / "src", tmp_path / "out", config(block_size_px=32))
    chips = load_chipset(tmp_path / "out")
    assert report["files"]["ingested"] == 1 and report["chips"]["dropped_constant"] == 0
    assert all(np.ptp(chips.images[i]) > 0.5 for i in range(len(chips.manifest)))  # spread over [0, 1]


def test_configured_value_range_maps_linearly_then_clips(tmp_path):
    data = reflectance(2, 2, 64)
    data[0, :4] = 12_000  # above the range: saturates at 1
    path = write_raster(tmp_path / "src" / "dn.tif", data)
    ingest(tmp_path / "src", tmp_path / "out", config(value_range=[1000, 11000]))
    chips = load_chipset(tmp_path / "out")
    with rasterio.open(path) as src:
        for row in chips.manifest:
            expected = np.clip((src.read(window=window_of(row)).astype(np.float64) - 1000) / 10_000, 0, 1)
            np.testing.assert_allclose(chips.images[int(row["chip_id"])], expected, rtol=1e-6, atol=STORED_ATOL)
    assert chips.images[:].max() == 1.0 and chips.images[:].min() == 0.0


def test_a_band_folder_mixing_uint8_and_scaled_bands_gets_a_range_per_channel(tmp_path):
    rng = np.random.default_rng(8)
    write_raster(tmp_path / "src" / "scene" / "B01.tif", rng.integers(0, 255, (1, 64, 64)).astype(np.uint8))
    write_raster(tmp_path / "src" / "scene" / "B02.tif", rng.integers(100, 5000, (1, 64, 64)).astype(np.uint16),
                 scales=[SCALE])
    report = ingest(tmp_path / "src", tmp_path / "out", config(block_size_px=32))
    (group,) = report["value_range"]["groups"]
    ranges = report["value_range"]["groups"][group]["channels"]
    assert group == "uint8/uint16 x0.0001"  # one scene: its two stored types, one range per channel
    assert ranges["coastal"][1] > 200 and ranges["blue"][1] < 0.6  # uint8 digital numbers vs reflectance


# --- 3. bands by name or index -----------------------------------------------------------------------

def test_bands_by_name_and_index_in_configured_order(tmp_path):
    path = write_raster(tmp_path / "src" / "s.tif", reflectance(3, 4, 64), scales=[SCALE] * 4,
                        descriptions=["blue", "green", "red", "nir"])
    ingest(tmp_path / "src", tmp_path / "out", config(bands=["NIR", 3, "green"], value_range=[0, 1]))
    chips = load_chipset(tmp_path / "out")
    assert chips.channel_names == ["nir", "red", "green"]
    with rasterio.open(path) as src:
        for row in chips.manifest:
            expected = src.read([4, 3, 2], window=window_of(row)).astype(np.float64) * SCALE
            np.testing.assert_allclose(chips.images[int(row["chip_id"])], expected, rtol=1e-6, atol=STORED_ATOL)


def test_unknown_band_name_names_the_key_and_the_available_names(tmp_path):
    write_raster(tmp_path / "src" / "s.tif", reflectance(4, 2, 64), scales=[SCALE] * 2,
                 descriptions=["red", "nir"])
    reason = rejected(tmp_path / "src", config(bands=["swir1"]))["s.tif"]
    assert reason == "s.tif: data.remote.geotiff.bands: 'swir1' matches no band; available names: ['red', 'nir']"
    reason = rejected(tmp_path / "src", config(bands=[3]))["s.tif"]
    assert "data.remote.geotiff.bands" in reason and "band index 3" in reason


def test_bands_config_accepts_names_and_indexes_and_checks_value_range():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["remote"]["geotiff"] = {"bands": ["B04", 2], "value_range": [0, 10000]}
    geotiff = parse_config(raw).data["remote"].geotiff
    assert geotiff.bands == ["B04", 2] and geotiff.value_range == (0.0, 10000.0)
    raw["data"]["remote"]["geotiff"] = {"value_range": [5, 5]}
    with pytest.raises(ConfigError, match=r"data\.remote\.geotiff\.value_range: needs \[low, high\]"):
        parse_config(raw)
    raw["data"]["remote"]["geotiff"] = {"bands": [0]}
    with pytest.raises(ConfigError, match=r"data\.remote\.geotiff\.bands"):
        parse_config(raw)


# --- 4. band folders ---------------------------------------------------------------------------------

def test_listing_finds_band_folders_and_keeps_multiband_files(tmp_path):
    one = np.ones((1, 8, 8), np.uint8)
    for name in ("scenes/a.tif", "products/P1/T33_B02_10m.tif", "products/P1/T33_B8A_20m.tif",
                 "mixed/x_B02.tif", "mixed/quicklook.tif", "lone/x_B04.tif", "masks/a.tif", "B02.tif", "B03.tif"):
        write_raster(tmp_path / name, one)
    (tmp_path / "products" / "P1" / "MTD_MSIL2A.xml").write_text("<xml/>")
    found = [p.relative_to(tmp_path).as_posix() for p in list_geotiff_files(tmp_path)]
    assert found == ["B02.tif", "B03.tif", "lone/x_B04.tif", "mixed/quicklook.tif", "mixed/x_B02.tif",
                     "products/P1", "scenes/a.tif"]


@pytest.fixture
def band_folder(tmp_path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """``src/products/T33UUP_20200101/``: B02-B04 at 10 m (64 px, nodata 0 in the top rows), B8A at 20 m."""
    source, folder = tmp_path / "src", tmp_path / "src" / "products" / "T33UUP_20200101"
    stored = {}
    for seed, (band, resolution) in enumerate({"B02": 10, "B03": 10, "B04": 10, "B8A": 20}.items()):
        size = 64 * 10 // resolution
        values = reflectance(seed, 1, size)
        if resolution == 10:
            values[:, :6] = 0
        grid = Affine(resolution, 0.0, GRID.c, 0.0, -resolution, GRID.f)
        write_raster(folder / f"T33UUP_20200101_{band}_{resolution}m.tif", values, transform=grid, nodata=0,
                     scales=[SCALE])
        stored[band] = values[0]
    (folder / "MTD_MSIL2A.xml").write_text("<xml/>")
    return source, folder, stored


def test_band_folder_is_one_scene_stacked_on_the_finest_grid(band_folder, tmp_path):
    source, folder, stored = band_folder
    (source / "labels.csv").write_text("path,label\nproducts/T33UUP_20200101,forest\n")
    report = ingest(source, tmp_path / "out", config(bands=["b04", "B03", 1, "B8A"], value_range=[0, 1],
                                                     chip_labelled_files=True))  # its label for every chip
    assert report["files"] == {"seen": 1, "ingested": 1, "no_chips": 0, "rejected": 0, "skipped": 0, "labels": 0}
    chips = load_chipset(tmp_path / "out")
    assert chips.channel_names == ["red", "green", "blue", "nir08"]  # Sentinel-2 tokens by what they measure
    upsampled = np.zeros((64, 64), np.uint16)  # rasterio's own warp of the 20 m band onto the 10 m grid
    reproject(stored["B8A"], upsampled, src_transform=Affine(20, 0, GRID.c, 0, -20, GRID.f), src_crs=CRS,
              dst_transform=GRID, dst_crs=CRS, resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
    assert len(chips.manifest) == 4
    for row in chips.manifest:
        assert row["source"] == "products/T33UUP_20200101" and row["label"] == "forest"
        r, c, i = int(row["row"]), int(row["col"]), int(row["chip_id"])
        with rasterio.open(folder / "T33UUP_20200101_B04_10m.tif") as src:
            valid = src.read_masks(1, window=window_of(row)) != 0
            assert [float(v) for v in row["transform"].split()] == pytest.approx(
                list(src.window_transform(window_of(row)))[:6])
        np.testing.assert_array_equal(chips.valid[i], valid)
        for channel, band in enumerate(("B04", "B03", "B02")):
            expected = stored[band][r:r + CHIP, c:c + CHIP] * SCALE
            np.testing.assert_allclose(chips.images[i][channel][valid], expected[valid], rtol=1e-6, atol=STORED_ATOL)
        expected = upsampled[r:r + CHIP, c:c + CHIP] * SCALE
        np.testing.assert_allclose(chips.images[i][3][valid], expected[valid], rtol=0, atol=1.01 * SCALE)
        assert not chips.images[i][:, ~valid].any()


def test_unknown_band_in_a_band_folder_names_the_key_and_the_bands(band_folder):
    source, _, _ = band_folder
    reason = rejected(source, config(bands=["B05"]))["products/T33UUP_20200101"]
    assert reason == ("products/T33UUP_20200101: data.remote.geotiff.bands: 'B05' matches no band; "
                      "available names: ['B02', 'B03', 'B04', 'B8A']")


# --- 5. GeoJSON labels -------------------------------------------------------------------------------

CLASSES = {"image_classes": ["background", "field", "water"],
           "mask_classes": {"0": "background", "1": "field", "2": "water"}}
RECTANGLES = [("field", (0, 40, 0, 36)), ("water", (36, 60, 30, 64)), ("field", (44, 64, 0, 12))]


def polygon(name: str, rows: tuple[int, int], cols: tuple[int, int]) -> dict:
    """A pixel-aligned rectangle of the scene grid, written in lon/lat (the GeoJSON default CRS)."""
    (r0, r1), (c0, c1) = rows, cols
    xs, ys = zip(*[GRID * corner for corner in [(c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)]], strict=True)
    lons, lats = transform_points(CRS, "EPSG:4326", xs, ys)
    return {"type": "Feature", "properties": {"class": name},
            "geometry": {"type": "Polygon", "coordinates": [[[x, y] for x, y in zip(lons, lats, strict=True)]]}}


def expected_mask(size: int, ids: dict[str, int]) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)  # "background" is id 0: uncovered pixels
    for name, (r0, r1, c0, c1) in RECTANGLES:
        mask[r0:r1, c0:c1] = ids[name]
    return mask


def write_geojson(path: Path, features: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))


def test_geojson_labels_become_chip_masks_and_dominant_labels(tmp_path):
    source = tmp_path / "src"
    data = reflectance(5, 2, 64)
    data[:, :10, :] = 0  # nodata strip: masked as 255
    path = write_raster(source / "scenes" / "s.tif", data, nodata=0, scales=[SCALE] * 2)
    (source / "classes.json").write_text(json.dumps(CLASSES))
    write_geojson(source / "masks" / "scenes" / "s.geojson", [polygon(n, r[:2], r[2:]) for n, r in RECTANGLES])
    ingest(source, tmp_path / "out", config())
    chips = load_chipset(tmp_path / "out")
    assert chips.mask_classes == ["background", "field", "water"] and chips.masks is not None
    full = expected_mask(64, {"background": 0, "field": 1, "water": 2})
    with rasterio.open(path) as src:
        valid_full = (src.read_masks() != 0).all(axis=0)
    assert len(chips.manifest) == 4
    for row in chips.manifest:
        r, c, i = int(row["row"]), int(row["col"]), int(row["chip_id"])
        expected = np.where(valid_full, full, 255)[r:r + CHIP, c:c + CHIP]
        np.testing.assert_array_equal(chips.masks[i], expected)
        dominant = np.bincount(expected[expected != 255]).argmax()
        assert row["label"] == CLASSES["image_classes"][dominant]


def test_band_folder_takes_a_flat_geojson_named_after_the_folder(band_folder, tmp_path):
    source, _, _ = band_folder
    (source / "classes.json").write_text(json.dumps(CLASSES))
    write_geojson(source / "masks" / "T33UUP_20200101.geojson", [polygon(n, r[:2], r[2:]) for n, r in RECTANGLES])
    ingest(source, tmp_path / "out", config(bands=["B02"]))
    chips = load_chipset(tmp_path / "out")
    full = expected_mask(64, {"background": 0, "field": 1, "water": 2})
    for row in chips.manifest:
        r, c, i = int(row["row"]), int(row["col"]), int(row["chip_id"])
        valid = chips.valid[i]
        np.testing.assert_array_equal(chips.masks[i][valid], full[r:r + CHIP, c:c + CHIP][valid])
        assert (chips.masks[i][~valid] == 255).all()


def test_without_a_background_class_uncovered_pixels_are_ignored(tmp_path):
    source = tmp_path / "src"
    write_raster(source / "s.tif", reflectance(6, 1, 64), scales=[SCALE])
    (source / "classes.json").write_text(json.dumps({"image_classes": ["field", "water"],
                                                      "mask_classes": {"0": "field", "1": "water"}}))
    write_geojson(source / "masks" / "s.geojson", [polygon(n, r[:2], r[2:]) for n, r in RECTANGLES])
    ingest(source, tmp_path / "out", config())
    chips = load_chipset(tmp_path / "out")
    full = np.full((64, 64), 255, np.uint8)
    for name, (r0, r1, c0, c1) in RECTANGLES:
        full[r0:r1, c0:c1] = {"field": 0, "water": 1}[name]
    for row in chips.manifest:
        r, c, i = int(row["row"]), int(row["col"]), int(row["chip_id"])
        np.testing.assert_array_equal(chips.masks[i], full[r:r + CHIP, c:c + CHIP])


def test_bad_label_files_reject_the_scene_with_a_reason(tmp_path):
    source = tmp_path / "src"
    write_raster(source / "a.tif", reflectance(7, 1, 64), scales=[SCALE])
    write_raster(source / "b.tif", reflectance(8, 1, 64), scales=[SCALE])
    write_raster(source / "c.tif", reflectance(9, 1, 64), scales=[SCALE])
    (source / "classes.json").write_text(json.dumps(CLASSES))
    write_geojson(source / "masks" / "a.geojson", [polygon("road", (0, 8), (0, 8))])
    write_geojson(source / "masks" / "b.geojson", [polygon("field", (0, 8), (0, 8))])
    write_raster(source / "masks" / "b.tif", np.zeros((1, 64, 64), np.uint8))
    reasons = rejected(source, config())
    assert reasons["a.tif"] == ("masks/a.geojson: classes ['road'] are not in classes.json mask_classes "
                                "['background', 'field', 'water']")
    assert reasons["b.tif"] == "b.tif: both masks/b.tif and masks/b.geojson label it; keep one"
    assert "c.tif" not in reasons


# --- 6. bounded GDAL cache ---------------------------------------------------------------------------

def test_gdal_cache_is_capped_while_reading(tmp_path, monkeypatch):
    write_raster(tmp_path / "src" / "s.tif", reflectance(10, 1, 64), scales=[SCALE])
    seen = []
    open_scene = geotiff_source.open_scene

    def recording(*args):
        seen.append(rasterio.env.getenv().get("GDAL_CACHEMAX"))
        return open_scene(*args)

    monkeypatch.setattr(geotiff_source, "open_scene", recording)
    ingest(tmp_path / "src", tmp_path / "out", config())
    assert seen == [GDAL_CACHE_BYTES] and GDAL_CACHE_BYTES == 256 * 2**20


def test_two_workers_give_the_same_cache_for_band_folders_and_geojson(band_folder, tmp_path):
    source, _, _ = band_folder
    write_raster(source / "other" / "x_B02.tif", reflectance(11, 1, 64), scales=[SCALE])
    write_raster(source / "other" / "x_B03.tif", reflectance(12, 1, 64), scales=[SCALE])
    (source / "classes.json").write_text(json.dumps(CLASSES))
    write_geojson(source / "masks" / "T33UUP_20200101.geojson", [polygon(n, r[:2], r[2:]) for n, r in RECTANGLES])
    cfg = config(bands=["B02", "B03"])
    one = ingest(source, tmp_path / "one", cfg)
    two = ingest(source, tmp_path / "two", cfg, workers=2)
    assert one == two and one["files"]["ingested"] == 2
    for name in ("chips.npy", "valid_bits.npy", "masks.npy", "manifest.csv", "stats.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


# --- no silent blanks: constant chips and scenes without chips ----------------------------------------------

def test_constant_chips_are_dropped_and_scenes_without_chips_are_said(tmp_path):
    source = tmp_path / "scenes"
    data = reflectance(3, 4, 2 * CHIP)
    data[:, :CHIP, :CHIP] = 12000  # saturated after [0, 1] scaling: one blank chip of four
    write_raster(source / "partly_blank.tif", data, scales=[SCALE] * 4)
    write_raster(source / "all_blank.tif", np.full((4, CHIP, CHIP), 10000, np.uint16), scales=[SCALE] * 4)
    write_raster(source / "tiny.tif", reflectance(4, 4, CHIP // 2), scales=[SCALE] * 4)
    report = ingest(source, tmp_path / "out", config(block_size_px=32))
    assert report["chips"]["kept"] == 3 and report["chips"]["dropped_constant"] == 2
    assert report["files"] == {"seen": 3, "ingested": 1, "no_chips": 2, "rejected": 0, "skipped": 0, "labels": 0}
    no_chips = {line["path"]: line["reason"] for line in report["no_chips"]}
    assert no_chips["all_blank.tif"] == ("all_blank.tif: no chips: 1 constant after train-split range p1-p99 "
                                         "-> [0, 1]")
    assert no_chips["tiny.tif"] == "tiny.tif: the 16x16 scene is smaller than chip_size 32"
    constant = {line["path"]: line["chips"] for line in report["constant_chips"]}
    assert constant == {"all_blank.tif": 1, "partly_blank.tif": 1}
    kept = load_chipset(tmp_path / "out")
    assert {(int(r["row"]), int(r["col"])) for r in kept.manifest} == {(0, CHIP), (CHIP, 0), (CHIP, CHIP)}


def test_a_labelled_tile_is_one_chip_of_the_whole_tile_and_unlabelled_scenes_are_still_cut(tmp_path):
    source = tmp_path / "tiles"
    tiles = {name: reflectance(k, 3, 128) for k, name in enumerate(("forest_1.tif", "river_1.tif", "archive.tif"))}
    for name, values in tiles.items():
        write_raster(source / name, values, scales=[SCALE] * 3)
    (source / "labels.csv").write_text("path,label\nforest_1.tif,forest\nriver_1.tif,river\n")
    ingest(source, tmp_path / "out", config(value_range=[0, 1]))
    chips = load_chipset(tmp_path / "out")
    by_file: dict[str, list] = {}
    for row in chips.manifest:
        by_file.setdefault(row["source"], []).append(row)
    assert [len(by_file[name]) for name in ("forest_1.tif", "river_1.tif", "archive.tif")] == [1, 1, 16]
    for name, label in (("forest_1.tif", "forest"), ("river_1.tif", "river")):
        (row,) = by_file[name]
        assert row["label"] == label
        block_means = (tiles[name] * SCALE).reshape(3, CHIP, 4, CHIP, 4).mean(axis=(2, 4))  # area average, 4x
        np.testing.assert_allclose(chips.images[int(row["chip_id"])], block_means, atol=STORED_ATOL + 1e-6)
    assert {row["label"] for row in by_file["archive.tif"]} == {""}
    ingest(source, tmp_path / "cut", config(value_range=[0, 1], chip_labelled_files=True))
    cut = load_chipset(tmp_path / "cut")
    assert sum(row["label"] == "forest" for row in cut.manifest) == 16


def _tiles_at_places(source: Path, places: int = 12, copies: int = 2) -> dict[str, int]:
    """``places`` 64 px tiles 5 km apart, each written ``copies`` times under other names (re-exports shifted by
    up to 3 px): file name → place."""
    rng, place_of = np.random.default_rng(8), {}
    for place in range(places):
        for copy in range(copies):
            shift = 10.0 * copy * 3
            grid = Affine(10.0, 0.0, GRID.c + 5000.0 * place + shift, 0.0, -10.0, GRID.f - shift)
            name = f"{'abcdefghijklmnopqrstuvwxyz'[place]}_{copy}.tif" if copy == 0 else f"copy_{place:02d}_{copy}.tif"
            write_raster(source / name, rng.integers(1, 9000, (3, 64, 64)).astype(np.uint16), transform=grid,
                         scales=[SCALE] * 3)
            place_of[name] = place
    return place_of


def test_tiles_of_the_same_place_in_different_files_share_a_split(tmp_path):
    from pipeline.ingest.splits import spatial_block_split

    place_of = _tiles_at_places(tmp_path / "src")
    cfg = config(value_range=[0, 1], block_size_px=64)
    ingest(tmp_path / "src", tmp_path / "out", cfg)
    manifest = load_chipset(tmp_path / "out").manifest
    split_of_place: dict[int, set] = {}
    for row in manifest:
        split_of_place.setdefault(place_of[row["source"]], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in split_of_place.values()), split_of_place
    assert {s for splits in split_of_place.values() for s in splits} == {"train", "val", "test"}
    per_file = spatial_block_split([r["source"] for r in manifest], [int(r["row"]) for r in manifest],
                                   [int(r["col"]) for r in manifest], 64, (0.6, 0.2, 0.2), 0)
    per_file_splits: dict[int, set] = {}
    for row, split in zip(manifest, per_file):
        per_file_splits.setdefault(place_of[row["source"]], set()).add(split)
    assert any(len(splits) > 1 for splits in per_file_splits.values())  # what blocks per file alone did


def test_a_user_split_putting_one_place_in_two_splits_is_refused(tmp_path):
    _tiles_at_places(tmp_path / "src", places=2)
    (tmp_path / "src" / "labels.csv").write_text("path,label,split\na_0.tif,x,train\ncopy_00_1.tif,x,test\n"
                                                 "b_0.tif,y,train\ncopy_01_1.tif,y,train\n")
    with pytest.raises(IngestError, match=r"^labels.csv split column: spatial block '.*' is in train \(a_0.tif\) "
                                          r"and test \(copy_00_1.tif\)"):
        ingest(tmp_path / "src", tmp_path / "out", config(value_range=[0, 1], block_size_px=64))
