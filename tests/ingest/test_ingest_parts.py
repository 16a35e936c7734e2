"""Ingest in parts (independent jobs) and one merge: the reference is a single ingest of the same folder, whose
cache and report the merge must reproduce byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydicom.uid import generate_uid

from pipeline.config_data import DomainDataConfig
from pipeline.demo.medical import MedicalDemoSpec, write_medical_demo
from pipeline.demo.remote import RemoteDemoSpec, write_remote_demo
from pipeline.ingest.folder import IngestError, ingest_folder
from pipeline.ingest.part_spec import PartSpec
from pipeline.ingest.parts import ingest_part, merge_parts
from pipeline.presets import PRESETS
from tests.fixtures.dicom_files import write_ct
from tests.fixtures.dicom_modalities import radiograph, write_image
from tests.fixtures.geotiff_files import CONFIG, config, write_raster
from tests.fixtures.paths import REPO
from tests.ingest.test_ingest_eo import mixed_folder

pytestmark = [pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def whole_and_merged(source: Path, cfg: DomainDataConfig, tmp_path: Path, count: int = 3) -> tuple[dict, dict]:
    """The cache files of one ingest and of ``count`` parts merged (after checking every part read files)."""
    preset = PRESETS[cfg.preset]
    (tmp_path / "whole").mkdir()
    ingest_folder(source, cfg, preset, 1, tmp_path / "whole", domain="d")
    for index in range(count):
        ingest_part(source, cfg, preset, PartSpec(index, count), tmp_path / "parts", domain="d")
    files = [json.loads((tmp_path / "parts" / f"part-{k}-of-{count}" / "part.json").read_text())["files"]
             for k in range(count)]
    assert all(files), files  # the folder was really spread over the parts
    (tmp_path / "merged").mkdir()
    merge_parts(tmp_path / "parts", source, cfg, preset, 1, tmp_path / "merged", domain="d")
    assert not (tmp_path / "merged" / ".spill").exists()
    return folder_bytes(tmp_path / "whole"), folder_bytes(tmp_path / "merged")


def mr_series_folder(source: Path) -> Path:
    """Three MR series of three slices (each series mapped by its own percentiles, across part boundaries), a CT
    slice the MR preset skips, and a file that is not DICOM."""
    source.mkdir(parents=True)
    base = radiograph((40, 40)).astype(np.float64)
    for s, gain in enumerate((1.0, 3.0, 7.0)):
        uid = generate_uid()
        for k, scale in enumerate((1.0, 0.7, 0.4)):
            stored = np.clip(base * scale * gain / 8, 0, 65535).astype(np.uint16)
            write_image(source / f"s{s}_{k}.dcm", stored, "MR", SeriesInstanceUID=uid, PatientID=f"P{s}")
    write_ct(source / "m_ct.dcm", (np.arange(40 * 40).reshape(40, 40) % 400).astype(np.int16))
    (source / "s1_9.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    return source


def range_group_folder(source: Path) -> Path:
    """Unscaled scenes in three value-range groups (uint16 DN, float32 ~1e3, uint8), fitted on the train split."""
    rng = np.random.default_rng(4)
    for k in range(5):
        write_raster(source / f"dn_{k}.tif", rng.integers(100, 4000, (2, 64, 64)).astype(np.uint16))
    for k in range(2):
        write_raster(source / f"f_{k}.tif", rng.uniform(100, 6000, (2, 64, 64)).astype(np.float32))
    write_raster(source / "q.tif", rng.integers(0, 255, (2, 64, 64)).astype(np.uint8))
    (source / "broken.tif").write_bytes(b"II*\0" + b"\0" * 64)
    return source


def test_three_parts_merge_into_the_single_run_cache_for_a_ct_export(tmp_path):
    source = tmp_path / "src"
    write_medical_demo(source, MedicalDemoSpec(patients=8, slices_per_patient=3, image_size=96), seed=1)
    (source / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    whole, merged = whole_and_merged(source, CONFIG.data["medical"], tmp_path)
    assert set(whole) >= {"chips.npy", "valid_bits.npy", "manifest.csv", "stats.json", "ingest_report.json",
                          "masks.npy"}
    assert merged == whole


def test_mr_series_split_over_parts_are_mapped_as_one_series_and_a_merge_can_run_again(tmp_path):
    source = mr_series_folder(tmp_path / "src")
    cfg = DomainDataConfig(preset="medical_mr", source=str(source), chip_size=32)
    whole, merged = whole_and_merged(source, cfg, tmp_path)
    report = json.loads(whole["ingest_report.json"])
    assert report["files"]["ingested"] == 9 and report["files"]["rejected"] == 1 and report["files"]["skipped"] == 1
    assert merged == whole
    (tmp_path / "again").mkdir()  # the series' mapping went to the merge's own file, not into the parts
    merge_parts(tmp_path / "parts", source, cfg, PRESETS["medical_mr"], 1, tmp_path / "again", domain="d")
    assert folder_bytes(tmp_path / "again") == whole


@pytest.mark.parametrize("make", [range_group_folder, mixed_folder], ids=["range_groups", "band_plan"])
def test_three_parts_merge_into_the_single_run_cache_for_geotiff_scenes(tmp_path, make):
    source = make(tmp_path / "src")
    whole, merged = whole_and_merged(source, config(block_size_px=32), tmp_path)
    report = json.loads(whole["ingest_report.json"])
    assert report["files"]["rejected"] >= 1 and report["chips"]["kept"] > 0
    if make is range_group_folder:
        assert set(report["value_range"]["groups"]) == {"uint16", "float32 ~1e3", "uint8"}
    assert merged == whole


def test_parts_with_one_process_each_or_two_workers_each_agree(tmp_path):
    source = tmp_path / "src"
    write_remote_demo(source, RemoteDemoSpec(scenes=3, scene_size=128), seed=2)
    cfg = config()
    for workers in (1, 2):
        for index in range(2):
            ingest_part(source, cfg, PRESETS[cfg.preset], PartSpec(index, 2), tmp_path / f"parts_{workers}",
                        workers=workers, domain="d")
        (tmp_path / f"out_{workers}").mkdir()
        merge_parts(tmp_path / f"parts_{workers}", source, cfg, PRESETS[cfg.preset], 0, tmp_path / f"out_{workers}")
    assert folder_bytes(tmp_path / "out_1") == folder_bytes(tmp_path / "out_2")


def test_a_missing_or_foreign_part_stops_the_merge_with_one_line_naming_it(tmp_path):
    source = range_group_folder(tmp_path / "src")
    cfg, preset = config(block_size_px=32), PRESETS["remote_multispectral"]
    for index in (0, 2):
        ingest_part(source, cfg, preset, PartSpec(index, 3), tmp_path / "parts")
    with pytest.raises(IngestError, match=r"part-1-of-3: part 1/3 is missing \(run ingest --part 1/3 first\)$"):
        merge_parts(tmp_path / "parts", source, cfg, preset, 1, tmp_path / "out")
    ingest_part(source, config(block_size_px=32, min_valid_fraction=0.9), preset, PartSpec(1, 3), tmp_path / "parts")
    with pytest.raises(IngestError, match=r"part-1-of-3: part 1/3 was read with other data than this merge"):
        merge_parts(tmp_path / "parts", source, cfg, preset, 1, tmp_path / "out")
    ingest_part(source, cfg, preset, PartSpec(0, 2), tmp_path / "parts")
    with pytest.raises(IngestError, match=r"parts of \[2, 3\] in all"):
        merge_parts(tmp_path / "parts", source, cfg, preset, 1, tmp_path / "out")


def test_part_specs_cover_the_files_once_in_order_and_bad_specs_say_what_a_part_is():
    sizes = [5, 100, 1, 1, 1, 40, 0, 7, 300, 2]
    for count in (1, 2, 3, 4, 10, 12):
        slices = [PartSpec(index, count).slice_of(sizes) for index in range(count)]
        assert [i for part in slices for i in range(len(sizes))[part]] == list(range(len(sizes)))
    assert [len(range(10)[PartSpec(k, 2).slice_of([1] * 10)]) for k in range(2)] == [5, 5]
    for text, message in (("3", "expected INDEX/COUNT"), ("3/3", "counts from 0 to COUNT - 1"),
                          ("a/2", "expected INDEX/COUNT"), ("0/0", "counts from 0")):
        with pytest.raises(ValueError, match=message):
            PartSpec.parse(text)
    assert PartSpec.parse("2/8") == PartSpec(2, 8) and PartSpec(2, 8).name == "part-2-of-8"


def test_the_ingest_stage_runs_parts_and_merges_them_as_a_job_array_would(tmp_path):
    source = mr_series_folder(tmp_path / "src")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["paths"] = {key: str(tmp_path / key) for key in params["paths"]}
    params["data"] = {"medical": {"preset": "medical_mr", "source": str(source), "chip_size": 32}}
    params["grid"].update(domains=["medical"], cls_domains=["medical"], seg_domains=[], det_domains=[])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    def stage(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stages.ingest", "--domain", "medical", "--params",
                               str(tmp_path / "params.yaml"), *arguments], cwd=REPO, capture_output=True, text=True)

    assert stage().returncode == 0
    whole = folder_bytes(tmp_path / "ingest" / "medical")
    for index in range(3):
        done = stage("--part", f"{index}/3", "--parts-dir", str(tmp_path / "parts"))
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "parts" / "medical").iterdir()) == \
        ["part-0-of-3", "part-1-of-3", "part-2-of-3"]
    done = stage("--merge-parts", str(tmp_path / "parts"))
    assert done.returncode == 0, done.stderr
    assert folder_bytes(tmp_path / "ingest" / "medical") == whole
    assert json.loads((tmp_path / "reports" / "ingest" / "medical.json").read_text())["parts"] == 3
    bad = stage("--part", "3/3", "--parts-dir", str(tmp_path / "parts"))
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("error: ingest medical: --part 3/3")
    assert "Traceback" not in bad.stderr
