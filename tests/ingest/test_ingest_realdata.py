"""Whole-folder ingest of the real public files in ../shared/realdata (skipped when that folder is absent).

Every file must be accounted for — ingested, rejected or skipped, each non-ingested one with a reason that
names it — and nothing may crash the run: that is what a user's PACS export or EO archive will need.
"""

import shutil
from pathlib import Path

import pytest

from pipeline.config_data import DomainDataConfig
from pipeline.ingest.folder import ingest_folder
from pipeline.presets import PRESETS
from tests.fixtures.paths import REALDATA

pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is not present")


def _ingest(folder: Path, preset: str, tmp_path: Path, **options) -> dict:
    cfg = DomainDataConfig(preset=preset, source=str(folder), chip_size=64, **options)
    return ingest_folder(folder, cfg, PRESETS[preset], 0, tmp_path)


def _accounted(report: dict) -> None:
    files = report["files"]
    assert files["seen"] == (files["ingested"] + files["no_chips"] + files["rejected"] + files["skipped"]
                             + files["labels"])
    assert len(report["no_chips"]) == files["no_chips"]
    for line in (report["rejected"] + report["skipped"] + report["no_chips"]
                 + [e for e in report["labels"] if "reason" in e]):
        assert line["reason"].startswith(line["path"]) and "\n" not in line["reason"]


def test_rasterio_test_rasters(tmp_path):
    report = _ingest(REALDATA / "rasterio_testdata", "remote_multispectral", tmp_path,
                     split_fractions=(0.6, 0.2, 0.2), geotiff={"block_size_px": 128})
    _accounted(report)
    rejected = {line["path"]: line["reason"] for line in report["rejected"]}
    assert "corrupt.tif" in rejected and report["files"]["ingested"] >= 5 and report["chips"]["kept"] > 0
    # the defaults: RGB scenes (named by their colour interpretation) are the band set that keeps the most;
    # single-band scenes are rejected with their band set, not by file order
    assert report["bands"]["bands"] == ["blue", "green", "red"]
    assert "lack the domain's bands [blue, green, red]" in rejected["byte.tif"]
    groups = report["value_range"]["groups"]  # 8-bit and 16-bit RGB: a range each, fitted on the train split
    assert {"uint8", "uint16"} <= set(groups) and groups["uint8"]["channels"]["red"][1] <= 255
    no_chips = {line["path"]: line["reason"] for line in report["no_chips"]}
    assert "constant after train-split range" in no_chips["RGBA.uint16.tif"]  # every valid pixel is 10000


def test_dicom_ct_with_segmentation_objects(tmp_path):
    report = _ingest(REALDATA / "dcmqi_ct_seg", "medical_ct", tmp_path, split_fractions=(0.34, 0.33, 0.33))
    _accounted(report)
    assert report["files"]["ingested"] >= 3 and report["files"]["rejected"] == 0  # CT slices and multi-frame CT
    skipped = {line["path"]: line["reason"] for line in report["skipped"]}
    assert "not an image" in skipped["sr-example/sr.dcm"]  # a structured report has no pixels to learn from
    labels = {entry["path"]: entry for entry in report["labels"]}  # DICOM SEG: labels for the CT, not images
    assert labels["segmentations/liver.dcm"]["images"] == 3 and "segmentations/liver.dcm" not in skipped
    assert "none of them in the source folder" in skipped["sr-example/seg.dcm"]  # its PET images are absent
    # multi-frame objects give one chip per frame
    assert report["chips"]["kept"] + report["chips"]["dropped_constant"] > report["files"]["ingested"]
    # the tiny 23x38x3 / 24x38x3 volumes hold blank slices (every value 0 HU): dropped and said, not trained on
    no_chips = {line["path"]: line["reason"] for line in report["no_chips"]}
    assert "constant after HU windows L40/W400" in no_chips["segmentations/23x38x3/image/IMG0001.dcm"]
    assert report["modalities"]["MR"] == {"skipped": 1}  # the parametric map's MR slice: medical_mr reads it


def test_chest_xray_pngs_as_an_image_folder(tmp_path):
    source = tmp_path / "pngs"
    for png in (REALDATA / "torchxrayvision_cxr_samples").rglob("*.png"):  # without the folder's own labels.csv
        target = source / png.relative_to(REALDATA / "torchxrayvision_cxr_samples")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, target)
    out = tmp_path / "out"
    out.mkdir()
    report = _ingest(source, "natural_rgb", out, split_fractions=(0.34, 0.33, 0.33))
    _accounted(report)
    assert report["files"]["ingested"] >= 3


def test_foreign_labels_csv_is_a_one_line_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"labels\.csv: needs the columns 'path,label'"):
        _ingest(REALDATA / "torchxrayvision_cxr_samples", "natural_rgb", tmp_path)
