"""labels.csv as users write it: paths in other forms, a split column, and tables that match nothing."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.config_data import DomainDataConfig
from pipeline.data.chips import load_chipset
from pipeline.demo.medical import MedicalDemoSpec, write_medical_demo
from pipeline.ingest.folder import IngestError, ingest_folder
from pipeline.ingest.labels_table import read_labels_table
from pipeline.presets import PRESETS
from tests.fixtures.paths import REPO

CONFIG = load_config(REPO / "params.yaml")


def write_table(source: Path, rows: list[tuple], header: str = "path,label,split", bom: bool = False) -> None:
    text = header + "\n" + "".join(",".join(row) + "\n" for row in rows)
    (source / "labels.csv").write_text(("\ufeff" if bom else "") + text)


def touch(source: Path, *relatives: str) -> list[Path]:
    paths = []
    for relative in relatives:
        path = source / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        paths.append(path)
    return paths


def test_paths_written_in_other_forms_name_their_files(tmp_path):
    files = touch(tmp_path, "train/a.png", "train/B.png", "test/c.png", "x/Dup.png", "x/dup.png")
    write_table(tmp_path, [("./train/a.png", "cat", "train"), ("train\\b.PNG", "dog", "Training"),
                           ("test//c.png", "cat", "TEST"), ("x/DUP.png", "cat", "val")], header="Path,Label,Split",
                bom=True)
    table = read_labels_table(tmp_path, files)
    assert table.labels == {"train/a.png": "cat", "train/B.png": "dog", "test/c.png": "cat"}
    assert table.splits == {"train/a.png": "train", "train/B.png": "train", "test/c.png": "test"}
    assert table.unmatched == ["x/DUP.png"]  # two files differ only in case: no guess
    assert table.report()["labels_csv"] == {"rows": 4, "matched": 3, "unmatched": 1, "first_unmatched": ["x/DUP.png"]}


def test_a_table_matching_no_file_or_too_few_stops_with_one_line(tmp_path):
    files = touch(tmp_path, "a.png", "b.png")
    write_table(tmp_path, [("other/a.png", "cat", ""), ("other/b.png", "dog", "")])
    with pytest.raises(ValueError, match=r"none of its 2 paths name a file below .* \(first unmatched: "
                                         r"'other/a.png'\); paths are relative to the folder that holds labels.csv$"):
        read_labels_table(tmp_path, files)
    write_table(tmp_path, [("a.png", "cat", ""), ("q.png", "dog", ""), ("r.png", "dog", "")])
    with pytest.raises(ValueError, match="only 1 of its 3 paths"):
        read_labels_table(tmp_path, files)


@pytest.mark.parametrize("rows, message", [
    ([("a.png", "cat", "holdout")], "split 'holdout' of 'a.png' is not train, val or test"),
    ([("a.png", "cat", "train"), ("./a.png", "dog", "train")], "'./a.png' names 'a.png', listed before"),
])
def test_bad_rows_are_named(tmp_path, rows, message):
    files = touch(tmp_path, "a.png")
    write_table(tmp_path, rows)
    with pytest.raises(ValueError, match=message):
        read_labels_table(tmp_path, files)


def _ct_export(source: Path) -> list[dict]:
    """The demo CT export (6 patients × 2 slices); labels.csv rewritten with a split per patient."""
    write_medical_demo(source, MedicalDemoSpec(patients=6, slices_per_patient=2, image_size=64), seed=3)
    with open(source / "labels.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:
        patient = int(row["path"].split("/")[1].split("_")[1])
        row["split"] = {1: "test", 2: "val"}.get(patient, "train")
        row["path"] = row["path"].replace("/", "\\")  # as a Windows export writes it
    return rows


def test_the_split_column_replaces_the_automatic_split_and_is_reported(tmp_path):
    source = tmp_path / "src"
    rows = _ct_export(source)
    write_table(source, [(r["path"], r["label"], r["split"]) for r in rows])
    (tmp_path / "out").mkdir()
    report = ingest_folder(source, CONFIG.data["medical"], PRESETS["medical_ct"], 0, tmp_path / "out")
    chips = load_chipset(tmp_path / "out")
    expected = {r["path"].replace("\\", "/"): r["split"] for r in rows}
    assert {row["source"]: row["split"] for row in chips.manifest} == expected
    assert all(row["label"] for row in chips.manifest)  # the Windows paths matched their files
    assert report["split_from"] == "labels.csv split column" and "labels_csv" not in report
    assert report["counts"]["test"] and report["counts"]["val"]
    (tmp_path / "auto").mkdir()  # without the column: the automatic patient split, which differs
    write_table(source, [(r["path"], r["label"]) for r in rows], header="path,label")
    auto = ingest_folder(source, CONFIG.data["medical"], PRESETS["medical_ct"], 0, tmp_path / "auto")
    assert "split_from" not in auto
    assert {row["source"]: row["split"] for row in load_chipset(tmp_path / "auto").manifest} != expected


def test_a_patient_in_two_splits_of_the_column_stops_ingest_naming_its_files(tmp_path):
    source = tmp_path / "src"
    rows = _ct_export(source)
    rows[0]["split"], rows[1]["split"] = "train", "test"  # one patient's two slices
    write_table(source, [(r["path"], r["label"], r["split"]) for r in rows])
    (tmp_path / "out").mkdir()
    with pytest.raises(IngestError, match=r"^labels.csv split column: patient group '[0-9a-f]+' is in train "
                                          r"\(images/subject_001/.*\) and test \(images/subject_001/.*\)"):
        ingest_folder(source, CONFIG.data["medical"], PRESETS["medical_ct"], 0, tmp_path / "out")


def test_an_image_folder_honours_the_split_and_files_not_listed_only_pretrain(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    (tmp_path / "src").mkdir()
    for name in ("a", "b", "c", "d"):
        cv2.imwrite(str(tmp_path / "src" / f"{name}.png"), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    write_table(tmp_path / "src", [("A.PNG", "x", "test"), ("b.png", "y", "val"), ("c.png", "x", "train")])
    cfg = DomainDataConfig(preset="natural_rgb", source=str(tmp_path / "src"), chip_size=32)
    (tmp_path / "out").mkdir()
    ingest_folder(tmp_path / "src", cfg, PRESETS["natural_rgb"], 0, tmp_path / "out")
    manifest = {row["source"]: (row["split"], row["label"]) for row in load_chipset(tmp_path / "out").manifest}
    assert manifest == {"a.png": ("test", "x"), "b.png": ("val", "y"), "c.png": ("train", "x"), "d.png": ("train", "")}
