"""The real labelled development sets, written in their realistic format by the bench scripts and ingested as a
user would: their own split honoured, a labelled tile one chip, near-duplicates counted. Skipped when
``../shared/realdata/labelled`` is absent (a fresh clone)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config_data import DomainDataConfig
from pipeline.data.chips import load_chipset
from pipeline.ingest.folder import ingest_folder
from pipeline.presets import PRESETS
from tests.fixtures.paths import REALDATA, REPO, present

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def convert(script: str, name: str, out: Path, limit: int) -> dict[str, str]:
    """Run a bench conversion script on one set; returns its labels.csv as {path: split}."""
    source = present(REALDATA / "labelled" / name)
    subprocess.run([sys.executable, str(REPO / "bench" / script), str(source), str(out), "--limit", str(limit)],
                   check=True, capture_output=True, text=True)
    with open(out / "labels.csv", newline="") as stream:
        return {row["path"]: row["split"] for row in csv.DictReader(stream)}


def ingest(source: Path, preset: str, out: Path) -> dict:
    out.mkdir()
    cfg = DomainDataConfig(preset=preset, source=str(source), chip_size=64)
    return ingest_folder(source, cfg, PRESETS[preset], 0, out)


def test_busi_as_dicom_ultrasound_keeps_its_published_split_and_lesion_masks(tmp_path):
    splits = convert("realdata_as_dicom.py", "busi", tmp_path / "busi", limit=4)
    report = ingest(tmp_path / "busi", "medical_colour", tmp_path / "out")
    chips = load_chipset(tmp_path / "out")
    assert {row["source"]: row["split"] for row in chips.manifest} == splits
    assert report["split_from"] == "labels.csv split column" and set(splits.values()) == {"train", "val", "test"}
    assert chips.masks is not None and "lesion" in chips.mask_classes
    assert set(report["near_duplicates"]) >= {"train-val", "train-test", "val-test"}


def test_ucmerced_as_geotiff_tiles_are_one_chip_each_in_their_published_split(tmp_path):
    splits = convert("realdata_as_geotiff.py", "ucmerced", tmp_path / "ucm", limit=1)
    ingest(tmp_path / "ucm", "remote_multispectral", tmp_path / "out")
    chips = load_chipset(tmp_path / "out")
    assert sorted(row["source"] for row in chips.manifest) == sorted(splits)  # one chip per 256 px tile
    assert {row["source"]: row["split"] for row in chips.manifest} == splits
