"""Ingest of generated DICOM / GeoTIFF folders: pixel values against pydicom / rasterio, splits, no PHI."""

import csv
import subprocess
import sys
import json
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import rasterio
from PIL import Image
from pydicom.pixels import apply_modality_lut
from rasterio.windows import Window

from pipeline.config import load_config
from pipeline.data.chips import load_chipset
from pipeline.demo.medical import MedicalDemoSpec, write_medical_demo
from pipeline.demo.remote import RemoteDemoSpec, write_remote_demo
from pipeline.ingest.folder import IngestError, ingest_folder
from pipeline.presets import PRESETS
from tests.fixtures.paths import REPO

CONFIG = load_config(REPO / "params.yaml")


@pytest.fixture(scope="module")
def medical(tmp_path_factory):
    source, out = tmp_path_factory.mktemp("med_src"), tmp_path_factory.mktemp("med_out")
    write_medical_demo(source, MedicalDemoSpec(patients=8, slices_per_patient=3, image_size=96), seed=1)
    (source / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    report = ingest_folder(source, CONFIG.data["medical"], PRESETS["medical_ct"], 1, out)
    return source, out, report


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    source, out = tmp_path_factory.mktemp("rem_src"), tmp_path_factory.mktemp("rem_out")
    write_remote_demo(source, RemoteDemoSpec(scenes=2, scene_size=256), seed=1)
    cfg = CONFIG.data["remote"].model_copy(update={"chip_size": 32})
    cfg = cfg.model_copy(update={"geotiff": cfg.geotiff.model_copy(update={"block_size_px": 64})})
    report = ingest_folder(source, cfg, PRESETS["remote_multispectral"], 1, out)
    return source, out, report


def _window01(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 linear window, written independently, mapped to [0, 1]."""
    return np.clip((hu - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_medical_chips_match_pydicom(medical):
    source, out, _ = medical
    chips = load_chipset(out)
    windows = CONFIG.data["medical"].dicom.hu_windows
    for row in chips.manifest[:5]:
        ds = pydicom.dcmread(source / row["source"])
        hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        hu = cv2.resize(hu, (64, 64), interpolation=cv2.INTER_AREA)  # area-average in HU, then window
        expected = np.stack([_window01(hu, w.center, w.width) for w in windows], axis=-1).astype(np.float32)
        np.testing.assert_allclose(np.moveaxis(chips.images[int(row["chip_id"])], 0, -1), expected, atol=1e-3)


def test_medical_split_by_patient_and_no_phi(medical):
    source, out, report = medical
    chips = load_chipset(out)
    by_group: dict[str, set[str]] = {}
    for row in chips.manifest:
        by_group.setdefault(row["group"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in by_group.values())
    assert {"train", "val", "test"} <= set(chips.split)
    phi = set()
    for path in source.rglob("*.dcm"):
        if path.name == "broken.dcm":
            continue
        ds = pydicom.dcmread(path)
        phi |= {str(ds.PatientID), str(ds.PatientName), str(ds.PatientBirthDate), str(ds.AccessionNumber)}
    written = "".join(p.read_text() for p in out.iterdir() if p.suffix in {".csv", ".json"})
    leaked = [value for value in phi if value and value in written]
    assert not leaked, f"raw identifiers in ingest outputs: {leaked}"


def test_bad_file_is_reported_not_fatal(medical):
    _, out, report = medical
    assert [r["path"] for r in report["rejected"]] == ["broken.dcm"]
    assert report["files"]["rejected"] == 1 and report["files"]["ingested"] == report["files"]["seen"] - 1
    assert "broken.dcm" in json.loads((out / "ingest_report.json").read_text())["rejected"][0]["reason"]


def test_normalisation_statistics_come_from_train_only(medical):
    _, out, _ = medical
    chips = load_chipset(out)
    train = chips.images[chips.indices("train")]
    everything = chips.images[:]
    assert not np.allclose(chips.mean, np.clip(everything, 0, 1).mean(axis=(0, 2, 3)), atol=1e-6)
    low, high = np.percentile(np.moveaxis(train, 1, 0).reshape(train.shape[1], -1), [2, 98], axis=1)
    clipped = np.clip(np.moveaxis(train, 1, 0).reshape(train.shape[1], -1), low[:, None], high[:, None])
    np.testing.assert_allclose(chips.mean, clipped.mean(axis=1), rtol=1e-4)


def test_remote_chips_match_rasterio(remote):
    source, out, _ = remote
    chips = load_chipset(out)
    assert chips.channel_names == ["blue", "green", "red", "nir"]
    (group,) = json.loads((out / "stats.json").read_text())["value_range"]["groups"].values()
    fitted = group["channels"]  # the train split's p1-p99 of the demo's one range group
    low, high = (np.array([fitted[name][k] for name in chips.channel_names])[:, None, None] for k in (0, 1))
    for row in chips.manifest[::7]:
        with rasterio.open(source / row["source"]) as scene:
            raw = scene.read(window=Window(int(row["col"]), int(row["row"]), 32, 32)).astype(np.float64)
            expected = raw * np.array(scene.scales)[:, None, None] + np.array(scene.offsets)[:, None, None]
            nodata = raw == scene.nodata
            transform = scene.window_transform(Window(int(row["col"]), int(row["row"]), 32, 32))
        chip = chips.images[int(row["chip_id"])]
        unit = np.clip((expected - low) / (high - low), 0, 1)
        np.testing.assert_allclose(chip[~nodata], unit[~nodata], atol=1e-5)
        assert np.array_equal(chips.valid[int(row["chip_id"])], ~nodata.any(axis=0))
        assert [float(v) for v in row["transform"].split()] == pytest.approx(list(transform)[:6])


def test_remote_split_by_spatial_block(remote):
    _, out, _ = remote
    with open(out / "manifest.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    blocks: dict[tuple, set[str]] = {}
    for row in rows:
        blocks.setdefault((row["source"], int(row["row"]) // 64, int(row["col"]) // 64), set()).add(row["split"])
    assert all(len(s) == 1 for s in blocks.values())
    labelled = [row["label"] for row in rows if row["label"]]
    assert set(labelled) <= {"water", "forest", "cropland", "urban", "grassland"} and labelled


def test_two_workers_write_the_same_cache(medical, tmp_path):
    source, out, report = medical
    parallel = tmp_path / "parallel"
    parallel.mkdir()
    assert ingest_folder(source, CONFIG.data["medical"], PRESETS["medical_ct"], 1, parallel, workers=2) == report
    for name in ("chips.npy", "valid_bits.npy", "manifest.csv", "stats.json"):
        assert (parallel / name).read_bytes() == (out / name).read_bytes(), name


def test_strict_mode_stops_at_the_bad_file_with_one_line(medical, tmp_path):
    source, _, _ = medical
    with pytest.raises(IngestError) as error:
        ingest_folder(source, CONFIG.data["medical"], PRESETS["medical_ct"], 1, tmp_path, strict=True)
    assert str(error.value).startswith("broken.dcm:") and "\n" not in str(error.value)
    assert not (tmp_path / "chips.npy").exists()


def test_outcome_report_counts_every_file(remote):
    source, _, report = remote
    scenes = len(list((source / "scenes").glob("*.tif")))
    assert report["files"] == {"seen": scenes, "ingested": scenes, "no_chips": 0, "rejected": 0, "skipped": 0,
                               "labels": 0}
    assert report["chips"]["kept"] == sum(sum(c.values()) for c in report["counts"].values())


def test_segmentation_masks_follow_their_chips(medical, remote):
    source, out, _ = remote
    chips = load_chipset(out)
    assert chips.masks is not None and chips.masks.shape == chips.valid.shape
    assert chips.mask_classes == ["water", "forest", "cropland", "urban", "grassland"]
    for row in chips.manifest[:5]:
        r, c, i = int(row["row"]), int(row["col"]), int(row["chip_id"])
        with rasterio.open(source / "masks" / Path(row["source"]).name) as src:
            expected = src.read(1, window=Window(c, r, 32, 32))
        np.testing.assert_array_equal(chips.masks[i][chips.valid[i]], expected[chips.valid[i]])
        assert (chips.masks[i][~chips.valid[i]] == 255).all()
    source, out, _ = medical
    chips = load_chipset(out)
    assert chips.mask_classes[0] == "background" and "lesion" in chips.mask_classes
    row = chips.manifest[0]
    png = np.asarray(Image.open(source / "masks" / Path(row["source"]).with_suffix(".png")))
    expected = cv2.resize(png, (64, 64), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(chips.masks[int(row["chip_id"])], expected)


def test_ingest_workers_do_not_import_the_training_stack():
    """A spawned worker re-imports the stage module as ``__mp_main__``: that import must stay light (the
    readers, not torch / timm, which cost ~4 s per worker here)."""
    root = REPO
    code = ("import runpy, sys; runpy.run_path('stages/ingest.py', run_name='__mp_main__'); "
            "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
