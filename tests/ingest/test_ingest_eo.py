"""Earth observation as it arrives: mixed band sets in one folder, SAR, any dtype, nothing silently saturated.

References are rasterio's own reads and numpy; fixtures are generated here with rasterio.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from pipeline.ingest.bands import canonical_band, choose_band_set
from pipeline.data.chips import load_chipset
from pipeline.ingest.folder import IngestError, ingest_folder
from tests.fixtures.geotiff_files import PRESET, SCALE, config, ingest, window_of, write_raster
from tests.fixtures.stored import STORED_ATOL

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")
SAR = {"preset": "remote_sar"}


def mixed_folder(root: Path, prefix: dict[str, str] | None = None) -> Path:
    """Three 4-band scenes named in two spellings and orders, two 5-band Sentinel-2-like scenes (a superset),
    two generic single-band scenes and one RGB scene; ``prefix`` renames files to change their listing order."""
    prefix = prefix or {}
    rng = np.random.default_rng(0)
    scenes = {"planet_a.tif": ["blue", "green", "red", "nir"], "planet_b.tif": ["Red", "Green", "Blue", "NIR"],
              "planet_c.tif": ["blue", "green", "red", "near infrared"],
              "s2_a.tif": ["B02", "B03", "B04", "B08", "B11"], "s2_b.tif": ["B02", "B03", "B04", "B08", "B11"],
              "dem.tif": ["b1"], "slope.tif": [""], "photo.tif": ["red", "green", "blue"]}
    for name, bands in scenes.items():
        data = rng.integers(100, 9000, size=(len(bands), 64, 64)).astype(np.uint16)
        write_raster(root / f"{prefix.get(name, '')}{name}", data, scales=[SCALE] * len(bands),
                     descriptions=[b or None for b in bands] if any(bands) else None)
    return root


def test_band_names_carry_meaning_only_where_they_have_it():
    assert [canonical_band(n) for n in ("B04", "Red", "SR_B4", "NIR", "near infrared", "B8A", "VV")] == \
        ["red", "red", "red", "nir", "nir", "nir08", "vv"]
    assert [canonical_band(n) for n in ("band_1", "Band 1", "b1", "", "3")] == [None] * 5  # generic
    assert canonical_band("NDVI") == "ndvi"  # a name of its own
    choice = choose_band_set({"a": ["b1"], "b": ["band_1"], "c": [""]}, "key")
    assert choice.channel_names == ("band_1",) and not choice.rejected  # descriptions never split them


def test_the_band_set_most_scenes_share_is_chosen_whatever_the_file_order(tmp_path):
    source = mixed_folder(tmp_path / "one")
    report = ingest(source, tmp_path / "out", config(block_size_px=32))
    chips = load_chipset(tmp_path / "out")
    assert chips.channel_names == ["blue", "green", "red", "nir"]
    bands = report["bands"]
    assert bands["bands"] == ["blue", "green", "red", "nir"] and (bands["scenes_giving_it"], bands["scenes"]) == (5, 8)
    assert bands["candidates"][0] == {"bands": "bands [blue, green, red, nir]", "scenes_with_it": 3,
                                      "scenes_giving_it": 5}  # 5 scenes x 4 bands: kept over RGB's 6 x 3
    assert report["files"]["ingested"] == 5 and report["files"]["rejected"] == 3
    reasons = {line["path"]: line["reason"] for line in report["rejected"]}
    assert reasons["dem.tif"] == ("dem.tif: 1 unnamed band(s) (2 scene(s) have this set) lack the domain's bands "
                                  "[blue, green, red, nir], which 5 of 8 scenes give; set "
                                  "data.remote.geotiff.bands to choose the bands")
    assert "bands [blue, green, red] (1 scene(s) have this set)" in reasons["photo.tif"]
    with rasterio.open(source / "planet_b.tif") as src:  # Red, Green, Blue, NIR: read back in blue … nir order
        row = next(r for r in chips.manifest if r["source"] == "planet_b.tif")
        stored = src.read([3, 2, 1, 4], window=window_of(row)).astype(np.float64) * SCALE
    (group,) = report["value_range"]["groups"].values()
    low, high = (np.array([group["channels"][n][k] for n in chips.channel_names])[:, None, None] for k in (0, 1))
    np.testing.assert_allclose(chips.images[int(row["chip_id"])], np.clip((stored - low) / (high - low), 0, 1),
                               atol=STORED_ATOL)
    s2_row = next(r for r in chips.manifest if r["source"] == "s2_a.tif")  # 5 bands: gives its 4 of the set
    assert chips.images[int(s2_row["chip_id"])].shape[0] == 4
    renamed = mixed_folder(tmp_path / "two", prefix={"dem.tif": "a_", "photo.tif": "0_", "s2_b.tif": "z_"})
    again = ingest(renamed, tmp_path / "out2", config(block_size_px=32))
    assert again["bands"] == report["bands"] and again["files"] == report["files"]
    assert again["value_range"] == report["value_range"]


def test_strict_mode_stops_at_a_scene_without_the_band_set(tmp_path):
    source = mixed_folder(tmp_path / "src")
    with pytest.raises(IngestError) as error:
        ingest(source, tmp_path / "out", config(block_size_px=32), strict=True)
    assert str(error.value).startswith("dem.tif: 1 unnamed band(s)") and "\n" not in str(error.value)


def test_an_8_bit_quicklook_and_a_16_bit_product_get_a_range_each(tmp_path):
    rng = np.random.default_rng(1)
    for k in range(2):
        write_raster(tmp_path / "src" / f"quicklook_{k}.tif", rng.integers(0, 256, (3, 64, 64)).astype(np.uint8))
        write_raster(tmp_path / "src" / f"product_{k}.tif", rng.integers(0, 4096, (3, 64, 64)).astype(np.uint16))
    report = ingest(tmp_path / "src", tmp_path / "out", config(block_size_px=32))
    groups = report["value_range"]["groups"]
    assert set(groups) == {"uint8", "uint16"}
    assert groups["uint8"]["channels"]["band_1"][1] < 256 < groups["uint16"]["channels"]["band_1"][1]
    chips = load_chipset(tmp_path / "out")
    assert report["chips"]["dropped_constant"] == 0
    assert all(np.asarray(chips.images[i]).std() > 0.2 for i in range(len(chips.manifest)))  # none squashed


# --- SAR -------------------------------------------------------------------------------------------------------

def _sar_config(**geotiff):
    return config(block_size_px=32, **geotiff).model_copy(update=SAR)


def test_sentinel1_grd_band_folder_in_db_with_the_polarisation_ratio(tmp_path):
    product = tmp_path / "src" / "S1A_IW_GRDH_20200101"
    rng = np.random.default_rng(2)
    amplitude = {pol: rng.gamma(1.0, scale, (64, 64)).clip(1, 65535).astype(np.uint16)
                 for pol, scale in (("vv", 300.0), ("vh", 60.0))}
    for pol in amplitude:
        amplitude[pol][:8] = 0  # outside the swath
        write_raster(product / f"s1a-iw-grd-{pol}-20200101t000000-001.tiff", amplitude[pol][None], nodata=0)
    report = ingest(tmp_path / "src", tmp_path / "out", _sar_config())
    chips = load_chipset(tmp_path / "out")
    assert chips.channel_names == ["vv", "vh", "vh_vv_ratio"]
    assert report["intensity"] == {"SAR amplitude -> dB, train-split range p1-p99 -> [0, 1]": 1}
    (group,) = report["value_range"]["groups"].values()
    low, high = (np.array([group["channels"][n][k] for n in chips.channel_names])[:, None, None] for k in (0, 1))
    for row in chips.manifest:
        window = window_of(row)
        decibels = np.stack([20 * np.log10(np.maximum(amplitude[p][window.toslices()], 1)) for p in ("vv", "vh")])
        decibels = np.concatenate([decibels, decibels[1:2] - decibels[0:1]])
        valid = (amplitude["vv"][window.toslices()] > 0) & (amplitude["vh"][window.toslices()] > 0)
        expected = np.clip((decibels - low) / (high - low), 0, 1) * valid
        np.testing.assert_allclose(chips.images[int(row["chip_id"])], expected, atol=STORED_ATOL)
        np.testing.assert_array_equal(chips.valid[int(row["chip_id"])], valid)


def test_complex_slc_becomes_amplitude_db_and_float_db_is_kept(tmp_path):
    rng = np.random.default_rng(3)
    slc = (rng.normal(0, 50, (2, 64, 64)) + 1j * rng.normal(0, 50, (2, 64, 64))).astype(np.complex64)
    path = tmp_path / "slc" / "sar_slc.tif"
    path.parent.mkdir()
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=2, dtype="complex64",
                       crs="EPSG:32633", transform=rasterio.transform.from_origin(500000, 4600000, 10, 10)) as dst:
        dst.write(slc)
        dst.set_band_description(1, "VV")
        dst.set_band_description(2, "VH")
    report = ingest(tmp_path / "slc", tmp_path / "out_slc", _sar_config())
    assert report["files"]["ingested"] == 1 and "SAR amplitude -> dB" in next(iter(report["intensity"]))
    (group,) = report["value_range"]["groups"]
    assert group == "complex64 SAR amplitude"
    db = rng.uniform(-30, -5, (2, 64, 64)).astype(np.float32)  # BigEarthNet-style Sentinel-1 patch in dB
    write_raster(tmp_path / "db" / "patch.tif", db, descriptions=["VV", "VH"])
    report = ingest(tmp_path / "db", tmp_path / "out_db", _sar_config())
    chips = load_chipset(tmp_path / "out_db")
    (group,) = report["value_range"]["groups"].values()
    assert -31 < group["channels"]["vv"][0] < -29 and -6 < group["channels"]["vv"][1] < -4  # kept in dB
    assert report["chips"]["dropped_constant"] == 0 and np.asarray(chips.images).std() > 0.1


def test_sar_input_can_be_stated(tmp_path):
    intensity = np.random.default_rng(4).uniform(0.001, 0.5, (1, 64, 64)).astype(np.float32)
    write_raster(tmp_path / "src" / "sigma0.tif", intensity, descriptions=["VV"])
    options = _sar_config().geotiff.sar.model_copy(update={"input": "intensity", "ratio": False})
    report = ingest(tmp_path / "src", tmp_path / "out", _sar_config(sar=options))
    (group,) = report["value_range"]["groups"].values()
    chips = load_chipset(tmp_path / "out")
    train = [chips.manifest[i] for i in np.flatnonzero(chips.split == "train")]
    decibels = np.concatenate([10 * np.log10(intensity[0][window_of(row).toslices()]).ravel() for row in train])
    np.testing.assert_allclose(group["channels"]["vv"], np.percentile(decibels, [1, 99]), rtol=1e-4)
    assert chips.channel_names == ["vv"]  # ratio: false


# --- review follow-ups ----------------------------------------------------------------------------------------

def test_sar_input_is_decided_on_the_whole_scene_and_noise_removal_negatives_stay_linear(tmp_path):
    rng = np.random.default_rng(6)
    decibels = rng.uniform(-25, -8, (1, 64, 64)).astype(np.float32)
    decibels[0, :32, :32] = rng.uniform(1, 5, (32, 32))  # a bright first chip (a city): still dB data
    write_raster(tmp_path / "db" / "patch.tif", decibels, descriptions=["VV"])
    report = ingest(tmp_path / "db", tmp_path / "out_db", _sar_config())
    assert next(iter(report["intensity"])).startswith("SAR db -> dB") and report["chips"]["dropped_constant"] == 0
    sigma0 = rng.gamma(2.0, 0.05, (1, 64, 64)).astype(np.float32)
    sigma0[0, ::7, ::5] = -1e-4  # thermal-noise removal leaves a few small negatives in linear power
    write_raster(tmp_path / "lin" / "sigma0.tif", sigma0, descriptions=["Sigma0_VV"])
    report = ingest(tmp_path / "lin", tmp_path / "out_lin", _sar_config())
    assert next(iter(report["intensity"])).startswith("SAR intensity -> dB")
    (group,) = report["value_range"]["groups"].values()
    assert group["channels"]["vv"][0] < -15  # decibels, not linear power; SNAP's Sigma0_VV is VV


def test_min_valid_fraction_holds_after_the_decibel_conversion(tmp_path):
    amplitude = np.random.default_rng(7).integers(50, 800, (1, 64, 64)).astype(np.uint16)
    amplitude[0, :32, :30] = 0  # GRD zeros outside the swath, no nodata tag
    write_raster(tmp_path / "src" / "grd_vv.tif", amplitude, descriptions=["VV"])
    report = ingest(tmp_path / "src", tmp_path / "out", _sar_config())
    assert report["chips"]["kept"] == 3 and report["chips"]["dropped_low_valid_fraction"] == 1


def test_b2_style_names_landsat_tokens_and_a_folder_of_sar_scenes(tmp_path):
    assert [canonical_band(n) for n in ("B2", "B8", "B8A", "b2")] == ["blue", "nir", "nir08", None]
    rng = np.random.default_rng(8)
    landsat = tmp_path / "src" / "LC09_L2SP_044034_20220101"
    for band in (4, 5):
        write_raster(landsat / f"LC09_L2SP_044034_20220101_SR_B{band}.TIF",
                     rng.integers(7000, 20000, (1, 64, 64)).astype(np.uint16))
    report = ingest(tmp_path / "src", tmp_path / "out", config(block_size_px=32))
    assert load_chipset(tmp_path / "out").channel_names == ["red", "nir08"]  # SR_B5 is NIR, not red edge 1
    for name in ("a", "b", "c"):  # one polarisation of three scenes: three scenes, not a broken band folder
        write_raster(tmp_path / "s1" / "scenes" / f"{name}_VV.tif", rng.uniform(-20, -5, (1, 64, 64)).astype(
            np.float32))
    report = ingest(tmp_path / "s1", tmp_path / "out_s1", _sar_config())
    assert report["files"]["ingested"] == 3 and not report["rejected"]


def test_colour_interpretation_names_rgb_bands_and_a_bgr_file_is_not_mixed_in(tmp_path):
    from rasterio.enums import ColorInterp
    rng = np.random.default_rng(9)
    for name, interp in (("rgb1", [ColorInterp.red, ColorInterp.green, ColorInterp.blue]),
                         ("rgb2", [ColorInterp.red, ColorInterp.green, ColorInterp.blue]),
                         ("bgr", [ColorInterp.blue, ColorInterp.green, ColorInterp.red])):
        data = rng.integers(0, 255, (3, 64, 64)).astype(np.uint8)
        write_raster(tmp_path / "src" / f"{name}.tif", data, colorinterp=interp)
    write_raster(tmp_path / "src" / "grey.tif", rng.integers(0, 255, (3, 64, 64)).astype(np.uint8),
                 colorinterp=[ColorInterp.gray] * 3)
    report = ingest(tmp_path / "src", tmp_path / "out", config(block_size_px=32))
    chips = load_chipset(tmp_path / "out")
    assert chips.channel_names == ["blue", "green", "red"] and report["files"]["ingested"] == 3
    assert "grey.tif" in {line["path"] for line in report["rejected"]}  # unnamed: which band is red?
    with rasterio.open(tmp_path / "src" / "bgr.tif") as src:  # bgr's band 1 is blue: the first channel
        row = next(r for r in chips.manifest if r["source"] == "bgr.tif")
        blue = src.read(1, window=window_of(row)).astype(np.float64)
    (group,) = report["value_range"]["groups"].values()
    low, high = group["channels"]["blue"]
    np.testing.assert_allclose(chips.images[int(row["chip_id"])][0], np.clip((blue - low) / (high - low), 0, 1),
                               atol=STORED_ATOL)


def test_generic_band_names_by_index_agree_and_strict_catches_channel_mismatches(tmp_path):
    rng = np.random.default_rng(10)
    write_raster(tmp_path / "src" / "a.tif", rng.integers(1, 900, (2, 64, 64)).astype(np.uint16), descriptions=["b1"])
    write_raster(tmp_path / "src" / "b.tif", rng.integers(1, 900, (2, 64, 64)).astype(np.uint16))
    report = ingest(tmp_path / "src", tmp_path / "out", config(block_size_px=32, bands=[1]))
    assert report["files"]["ingested"] == 2 and load_chipset(tmp_path / "out").channel_names == ["band_1"]
    write_raster(tmp_path / "mixed" / "a.tif", rng.integers(1, 900, (1, 64, 64)).astype(np.uint16),
                 descriptions=["red"])
    write_raster(tmp_path / "mixed" / "b.tif", rng.integers(1, 900, (1, 64, 64)).astype(np.uint16),
                 descriptions=["nir"])
    with pytest.raises(IngestError, match=r"^b\.tif: channels \['nir'\] differ from earlier files \['red'\]"):
        ingest(tmp_path / "mixed", tmp_path / "out_strict", config(block_size_px=32, bands=[1]), strict=True)


def test_float_reflectance_and_float_x10000_get_a_range_each(tmp_path):
    rng = np.random.default_rng(11)
    for k in range(2):
        write_raster(tmp_path / "src" / f"unit_{k}.tif", rng.uniform(0.01, 0.6, (2, 64, 64)).astype(np.float32))
        write_raster(tmp_path / "src" / f"scaled_{k}.tif", rng.uniform(100, 6000, (2, 64, 64)).astype(np.float32))
    report = ingest(tmp_path / "src", tmp_path / "out", config(block_size_px=32))
    assert set(report["value_range"]["groups"]) == {"float32 ~1e-1", "float32 ~1e3"}
    assert report["chips"]["dropped_constant"] == 0 and report["files"]["no_chips"] == 0


def test_a_range_group_without_a_training_chip_is_left_out_not_fitted_on_test(tmp_path):
    rng = np.random.default_rng(12)
    for k in range(4):
        write_raster(tmp_path / "src" / f"dn_{k}.tif", rng.integers(100, 4000, (2, 64, 64)).astype(np.uint16))
    elsewhere = Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 4_600_000.0)  # not where the others are (own block)
    write_raster(tmp_path / "src" / "z_quicklook.tif", rng.integers(0, 255, (2, 32, 32)).astype(np.uint8),
                 transform=elsewhere)
    (tmp_path / "out").mkdir()  # seed 8's spatial split puts the lone 8-bit scene's one chip outside the train split
    report = ingest_folder(tmp_path / "src", config(block_size_px=32), PRESET, 8, tmp_path / "out", domain="remote")
    groups = report["value_range"]["groups"]
    assert "no chip in the train split" in groups["uint8"]["from"] and groups["uint8"]["chips"] == 1
    assert "channels" not in groups["uint8"] and report["chips"]["dropped_no_train_range"] == 1
    (line,) = report["no_chips"]
    assert line["path"] == "z_quicklook.tif" and "no chip in the train split" in line["reason"]


def test_per_channel_value_ranges_and_label_rasters_keep_their_nodata_value(tmp_path):
    data = np.stack([np.full((64, 64), 500), np.full((64, 64), 3000)]).astype(np.uint16)
    data[:, :, 32:] += 100
    data[:, 1::2, 1::2] += 40  # texture: no chip is constant
    write_raster(tmp_path / "src" / "s.tif", data)
    report = ingest(tmp_path / "src", tmp_path / "out", config(block_size_px=32, value_range=[[0, 1000], [0, 4000]]))
    chips = load_chipset(tmp_path / "out")
    left = next(i for i, r in enumerate(chips.manifest) if r["col"] == "0")
    np.testing.assert_allclose(np.asarray(chips.images[left])[:, 0, 0], [0.5, 0.75], rtol=1e-6, atol=STORED_ATOL)
    assert report["value_range"]["from"] == "data.remote.geotiff.value_range"
    from pipeline.io.geotiff import read_scene_info
    from pipeline.io.geotiff_masks import read_label_chip
    info = read_scene_info(tmp_path / "src" / "s.tif")
    labels = np.ones((1, 64, 64), np.uint8)
    labels[0, :8] = 0
    same = write_raster(tmp_path / "labels_same.tif", labels, nodata=0)
    coarse = write_raster(tmp_path / "labels_coarse.tif", labels[:, ::2, ::2], nodata=0,
                          transform=rasterio.transform.from_origin(500_000.0, 4_600_000.0, 20, 20))
    np.testing.assert_array_equal(read_label_chip(same, 0, 0, 32, scene=info)[:8],
                                  read_label_chip(coarse, 0, 0, 32, scene=info)[:8])  # 0 either way, as stored


def test_a_class_raster_id_without_a_name_rejects_its_scene_with_one_line(tmp_path):
    rng = np.random.default_rng(13)
    write_raster(tmp_path / "src" / "s.tif", rng.integers(1, 900, (2, 64, 64)).astype(np.uint16))
    write_raster(tmp_path / "src" / "t.tif", rng.integers(1, 900, (2, 64, 64)).astype(np.uint16))
    write_raster(tmp_path / "src" / "masks" / "s.tif", np.full((1, 64, 64), 7, np.uint8))
    (tmp_path / "src" / "classes.json").write_text(json.dumps({"mask_classes": {"0": "background", "1": "water"}}))
    report = ingest(tmp_path / "src", tmp_path / "out", config(block_size_px=32))
    (line,) = report["rejected"]
    assert line["reason"] == ("s.tif: class raster value 7 has no class name; name it in classes.json "
                              "mask_classes") and report["files"]["ingested"] == 1


def test_large_sar_and_float_scenes_read_twice_give_the_cache_of_one_pass(tmp_path, monkeypatch):
    """A scene too large to hold (here every scene: the threshold is 0) is read twice, a first pass for the median
    that decides a SAR scene's input kind or a float scene's range group, then chip by chip into the spill."""
    from pipeline.ingest import folder

    rng = np.random.default_rng(11)
    amplitude = rng.integers(50, 800, (2, 64, 64)).astype(np.uint16)
    amplitude[:, :32, :30] = 0  # GRD zeros outside the swath: a chip dropped after the dB conversion
    write_raster(tmp_path / "sar" / "grd.tif", amplitude, descriptions=["VV", "VH"])
    write_raster(tmp_path / "sar" / "sigma0.tif", rng.gamma(2.0, 0.05, (2, 64, 64)).astype(np.float32),
                 descriptions=["VV", "VH"])
    write_raster(tmp_path / "optical" / "float.tif", rng.uniform(0, 0.6, (4, 64, 64)).astype(np.float32))
    for source, cfg in (("sar", _sar_config()), ("optical", config(block_size_px=32))):
        caches = {}
        for name, threshold in (("held", 1 << 40), ("two_passes", 0)):
            monkeypatch.setattr(folder, "LARGE_FILE_BYTES", threshold)
            out = tmp_path / f"{source}_{name}"
            report = ingest(tmp_path / source, out, cfg)
            caches[name] = report, {p.name: p.read_bytes() for p in out.iterdir() if p.name != "ingest_report.json"}
        assert caches["held"] == caches["two_passes"], source
        assert caches["held"][0]["chips"]["kept"] > 0
    names = json.loads((tmp_path / "sar_two_passes" / "stats.json").read_text())["channel_names"]
    assert len(names) == 3 and names[2].endswith("_ratio")  # vv, vh and the ratio channel


def test_clip_counts_equal_gathering_the_valid_pixels_and_comparing_in_float64():
    from pipeline.ingest.value_ranges import clip_counts

    rng = np.random.default_rng(21)
    data = rng.random((3, 16, 16), dtype=np.float32)
    valid = rng.random((16, 16)) > 0.2
    pixels = data[:, valid].astype(np.float64)
    for low, high in ((np.float64(data[:, 3, 3]), np.float64(data[:, 5, 5])),  # bounds that are chip values
                      (np.float64(data[:, 3, 3]) + 1e-12, np.float64(data[:, 5, 5]) - 1e-12),  # just inside them
                      (np.array([0.1, 0.2, 0.3]), np.array([0.9, 0.8, 0.7]))):  # bounds no float32 can hold
        for chip in (data, data.astype(np.float64)):
            counts = clip_counts(chip, valid, low, high)
            assert counts.below.tolist() == (pixels < low[:, None]).sum(axis=1).tolist()
            assert counts.above.tolist() == (pixels > high[:, None]).sum(axis=1).tolist()
            assert counts.total.tolist() == [int(valid.sum())] * 3
