"""Medical modalities through ingest: each preset reads its modalities as they mean, and nothing silently blank.

References are independent: pydicom's own ``apply_voi_lut`` / ``apply_color_lut`` / decoder colour conversion,
numpy percentiles, OpenCV resizes; the fixtures are generated here (tests/fixtures/dicom_modalities.py).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import yaml
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from pipeline.config_data import DomainDataConfig
from pipeline.data.chips import load_chipset
from pipeline.ingest.folder import IngestError, IngestFailed, ingest_folder
from pipeline.presets import PRESETS
from tests.fixtures.dicom_items import sequence_item
from tests.fixtures.dicom_modalities import (
    as_ybr_full, radiograph, ultrasound_frame, ultrasound_regions, voi_lut_item, write_image,
)
from tests.fixtures.dicom_files import write_ct
from tests.fixtures.stored import STORED_ATOL
from tests.fixtures.paths import REPO

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = REPO
REALDATA = ROOT.parent / "shared" / "realdata"


def ingest(source: Path, out: Path, preset: str, chip_size: int = 32, **options) -> dict:
    out.mkdir(exist_ok=True)
    strict = options.pop("strict", False)
    cfg = DomainDataConfig(preset=preset, source=str(source), chip_size=chip_size, split_fractions=(1.0, 0.0, 0.0),
                           **options)
    return ingest_folder(source, cfg, PRESETS[preset], 0, out, domain="med", strict=strict)


def chips_by_file(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    chips = load_chipset(out)
    return {f"{row['source']}#{row['frame']}": (np.asarray(chips.images[int(row["chip_id"])]),
                                                 np.asarray(chips.valid[int(row["chip_id"])]))
            for row in chips.manifest}


def letterboxed(plane: np.ndarray, size: int) -> np.ndarray:
    """An independent letterbox of an (H, W) plane: OpenCV area resize of the longer side to ``size``, centred."""
    height, width = plane.shape
    scale = size / max(height, width)
    inner_h, inner_w = round(height * scale), round(width * scale)
    out = np.zeros((size, size), np.float32)
    top, left = (size - inner_h) // 2, (size - inner_w) // 2
    out[top:top + inner_h, left:left + inner_w] = cv2.resize(plane.astype(np.float32), (inner_w, inner_h),
                                                             interpolation=cv2.INTER_AREA)
    return out


# --- radiographs -------------------------------------------------------------------------------------------

def test_radiographs_follow_their_voi_lut_keep_their_aspect_and_invert_monochrome1(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    pixels = radiograph((48, 80))
    write_image(source / "cr.dcm", pixels, "CR", "MONOCHROME1", VOILUTSequence=Sequence([voi_lut_item(0, 4096)]))
    write_image(source / "dx.dcm", pixels, "DX", WindowCenter=2500, WindowWidth=1500, VOILUTFunction="SIGMOID")
    report = ingest(source, tmp_path / "out", "medical_xray")
    chips = chips_by_file(tmp_path / "out")
    cr = pydicom.dcmread(source / "cr.dcm")
    lut = np.asarray(cr.VOILUTSequence[0].LUTData, np.float64)
    expected = 1.0 - (apply_voi_lut(cr.pixel_array, cr).astype(np.float64) - lut.min()) / (lut.max() - lut.min())
    chip, valid = chips["cr.dcm#0"]
    np.testing.assert_allclose(chip[0], letterboxed(expected, 32), atol=1e-5)
    rows = round(48 * 32 / 80)  # 48x80 → 19 rows of 32, centred, the rest padding
    top = (32 - rows) // 2
    assert not valid[:top].any() and not valid[top + rows:].any() and valid[top:top + rows].all()
    dx = pydicom.dcmread(source / "dx.dcm")
    low, high = apply_voi_lut(np.array([-1e12, 1e12]), dx)
    expected = (apply_voi_lut(dx.pixel_array.astype(np.float64), dx) - low) / (high - low)
    np.testing.assert_allclose(chips["dx.dcm#0"][0][0], letterboxed(expected, 32), atol=1e-5)
    assert report["intensity"] == {"file VOI LUT 1 of 1, MONOCHROME1 inverted": 1,
                                   "file window 1 of 1 (C 2500 W 1500, SIGMOID)": 1}


def test_radiograph_without_voi_gets_a_robust_window_and_extra_channels(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    pixels = radiograph((64, 64))
    write_image(source / "dx.dcm", pixels, "DX")
    ingest(source, tmp_path / "out", "medical_xray", dicom={"xray_channels": ["file_voi", {"percentiles": [5, 95]}]})
    chip, _ = chips_by_file(tmp_path / "out")["dx.dcm#0"]
    assert load_chipset(tmp_path / "out").channel_names == ["voi_file", "window_p5-p95"]
    for plane, (low, high) in zip(chip, ((0.5, 99.5), (5, 95))):
        p_low, p_high = np.percentile(pixels.astype(np.float64), [low, high])
        expected = np.clip((pixels - p_low) / (p_high - p_low), 0, 1)
        np.testing.assert_allclose(plane, cv2.resize(expected.astype(np.float32), (32, 32),
                                                     interpolation=cv2.INTER_AREA), atol=1e-5)


def test_real_chest_xray_pair_monochrome1_twin_is_the_inverse(tmp_path):
    folder = REALDATA / "torchxrayvision_cxr_samples"
    if not folder.is_dir():
        pytest.skip("../shared/realdata is not present")
    source = tmp_path / "src"
    source.mkdir()
    for path in folder.glob("*.dcm"):
        shutil.copy(path, source / path.name)
    report = ingest(source, tmp_path / "out", "medical_xray", chip_size=64, dicom={"modalities": ["CR"]})
    assert report["files"]["ingested"] == 2 and report["chips"]["dropped_constant"] == 0
    chips = chips_by_file(tmp_path / "out")
    original = next(key for key in chips if not key.startswith("Fake"))
    ds = pydicom.dcmread(source / original.split("#")[0])  # pydicom's decode of the JPEG, numpy's percentiles
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    low, high = np.percentile(values, [0.5, 99.5])
    expected = letterboxed(np.clip((values - low) / (high - low), 0, 1), 64)
    np.testing.assert_allclose(chips[original][0][0], expected, atol=1e-5)
    assert chips[original][0].std() > 0.1  # a chest, not a blank
    np.testing.assert_allclose(chips["Fake_MONOHR1.dcm#0"][0], 1.0 - chips[original][0], atol=2 * STORED_ATOL)


# --- MR -------------------------------------------------------------------------------------------------------

def test_mr_is_normalised_per_series_so_slices_keep_their_relative_intensity(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    base = radiograph((40, 40)).astype(np.float64)
    series = {"a": (generate_uid(), 1.0), "b": (generate_uid(), 7.0)}  # same anatomy, a 7x brighter scanner
    for name, (uid, gain) in series.items():
        for k, scale in enumerate((1.0, 0.5)):  # the second slice is half as bright as the first
            stored = np.clip(base * scale * gain / 8, 0, 65535).astype(np.uint16)
            write_image(source / f"{name}{k}.dcm", stored, "MR", SeriesInstanceUID=uid, PatientID=f"P{name}")
    ingest(source, tmp_path / "out", "medical_mr")
    chips = chips_by_file(tmp_path / "out")
    for name in series:  # reference: numpy percentiles of the series' resized slices
        planes = [cv2.resize((np.clip(base * s * series[name][1] / 8, 0, 65535).astype(np.uint16)).astype(np.float32),
                             (32, 32), interpolation=cv2.INTER_AREA) for s in (1.0, 0.5)]
        low, high = np.percentile(np.concatenate([p.ravel() for p in planes]), [0.5, 99.5])
        for k, plane in enumerate(planes):
            np.testing.assert_allclose(chips[f"{name}{k}.dcm#0"][0][0], np.clip((plane - low) / (high - low), 0, 1),
                                       atol=1e-5)
    assert chips["a0.dcm#0"][0].mean() > 1.5 * chips["a1.dcm#0"][0].mean()  # not re-stretched per slice
    np.testing.assert_allclose(chips["a0.dcm#0"][0], chips["b0.dcm#0"][0], atol=0.02)  # scanners agree


def _mosaic(count: int, tile: int) -> tuple[np.ndarray, list[np.ndarray]]:
    side = int(np.ceil(np.sqrt(count)))
    rng = np.random.default_rng(3)
    slices = [rng.integers(100, 4000, (tile, tile)).astype(np.uint16) for _ in range(count)]
    image = np.zeros((side * tile, side * tile), np.uint16)
    for k, plane in enumerate(slices):
        image[(k // side) * tile:(k // side + 1) * tile, (k % side) * tile:(k % side + 1) * tile] = plane
    return image, slices


def test_siemens_mosaic_is_split_into_its_slices(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    image, slices = _mosaic(count=10, tile=16)  # a 4x4 grid, the last 6 tiles blank
    path = write_image(source / "mosaic.dcm", image, "MR", ImageType=["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"])
    ds = pydicom.dcmread(path)
    ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0A, "US", 10)
    ds.save_as(path, enforce_file_format=True)
    write_image(source / "no_count.dcm", image, "MR", ImageType=["ORIGINAL", "PRIMARY", "MOSAIC"], PatientID="P2")
    report = ingest(source, tmp_path / "out", "medical_mr", chip_size=16)
    chips = chips_by_file(tmp_path / "out")
    assert sorted(chips) == [f"mosaic.dcm#{k}" for k in range(10)]
    low, high = np.percentile(np.concatenate([s.ravel() for s in slices]).astype(np.float64), [0.5, 99.5])
    for k, plane in enumerate(slices):
        np.testing.assert_allclose(chips[f"mosaic.dcm#{k}"][0][0], np.clip((plane - low) / (high - low), 0, 1),
                                   atol=1e-5)
    (line,) = report["rejected"]
    assert line["reason"].startswith("no_count.dcm: MOSAIC image without NumberOfImagesInMosaic")


# --- colour: ultrasound, photographs ---------------------------------------------------------------------

def test_ultrasound_rgb_and_ybr_keep_colour_and_only_the_scan_region(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    frame = ultrasound_frame((60, 80))
    regions = ultrasound_regions(10, 8, 69, 55)
    write_image(source / "rgb.dcm", frame, "US", "RGB", SequenceOfUltrasoundRegions=regions)
    write_image(source / "ybr.dcm", as_ybr_full(frame), "US", "YBR_FULL", SequenceOfUltrasoundRegions=regions,
                PatientID="P2")
    report = ingest(source, tmp_path / "out", "medical_colour")
    chips = chips_by_file(tmp_path / "out")
    inside = np.zeros((60, 80), bool)
    inside[8:56, 10:70] = True  # the 2D region; the spectral one at the top left is not image
    for name in ("rgb.dcm", "ybr.dcm"):
        decoded = pydicom.dcmread(source / name).pixel_array  # pydicom converts YBR_FULL to RGB
        expected = np.stack([letterboxed(np.where(inside, decoded[..., c] / 255.0, 0), 32) for c in range(3)])
        chip, valid = chips[f"{name}#0"]
        np.testing.assert_allclose(chip, expected, atol=1e-5)
        assert not valid[6:8, 0:4].any() and valid[12, 16]  # text corner out, sector in
        assert chip[0, 16:18, 15:19].mean() > chip[2, 16:18, 15:19].mean() + 0.3  # the red flow patch stays red
    assert report["intensity"] == {"RGB samples / 255, ultrasound regions": 2}


def test_ultrasound_without_regions_drops_the_constant_border_and_its_text(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    write_image(source / "us.dcm", ultrasound_frame((60, 80)), "US", "RGB")
    report = ingest(source, tmp_path / "out", "medical_colour", chip_size=80)
    chip, valid = chips_by_file(tmp_path / "out")["us.dcm#0"]
    top = (80 - 60) // 2
    assert not valid[top + 2:top + 6, 2:14].any()  # burned-in text on the background
    assert not valid[top + 50, 2] and valid[top + 30, 40]  # black outside the sector / speckle inside it
    assert (chip[:, ~valid] == 0).all()
    assert report["intensity"] == {"RGB samples / 255, constant border removed": 1}


def test_palette_colour_is_read_through_the_palette():
    path = get_testdata_file("examples_palette.dcm")
    if path is None:
        pytest.skip("pydicom test file examples_palette.dcm not shipped")
    from pipeline.io.dicom import open_dicom
    ds = pydicom.dcmread(path)
    (image,) = list(open_dicom(Path(path), fast_header=False).images(keep_colour=True))
    expected = apply_color_lut(ds.pixel_array, ds)
    np.testing.assert_array_equal(image.values, expected.astype(np.float32))
    assert image.sample_max == 2 ** int(ds.RedPaletteColorLookupTableDescriptor[2]) - 1


# --- which files a preset reads, and every file accounted for -------------------------------------------------

@pytest.fixture
def mixed_folder(tmp_path):
    """A PACS-like export: CT, MR, a radiograph, a colour ultrasound, a blank radiograph and a DICOMDIR."""
    source = tmp_path / "export"
    source.mkdir()
    write_ct(source / "ct.dcm", (np.arange(32 * 32).reshape(32, 32) % 400).astype(np.int16))
    write_image(source / "mr.dcm", radiograph((32, 32)), "MR", PatientID="P2")
    write_image(source / "cr.dcm", radiograph((32, 40)), "CR", PatientID="P3")
    write_image(source / "blank.dcm", np.zeros((32, 32), np.uint16), "DX", PatientID="P4")
    write_image(source / "us.dcm", ultrasound_frame(), "US", "RGB", PatientID="P5")
    shutil.copy(get_testdata_file("DICOMDIR"), source / "DICOMDIR")
    return source


def test_a_domain_reads_its_modalities_and_names_the_preset_for_the_others(mixed_folder, tmp_path):
    report = ingest(mixed_folder, tmp_path / "out", "medical_ct")
    files = report["files"]
    assert files == {"seen": 6, "ingested": 1, "no_chips": 0, "rejected": 0, "skipped": 5, "labels": 0}
    skipped = {line["path"]: line["reason"] for line in report["skipped"]}
    assert "modality MR: read by preset medical_mr" in skipped["mr.dcm"]
    assert "modality CR: read by preset medical_xray" in skipped["cr.dcm"]
    assert "colour image (RGB): read by preset medical_colour" in skipped["us.dcm"]
    assert "data.med.dicom.modalities" in skipped["mr.dcm"]
    assert "DICOMDIR media directory index" in skipped["DICOMDIR"]
    assert report["modalities"] == {"CR": {"skipped": 1}, "CT": {"ingested": 1}, "DX": {"skipped": 1},
                                    "MR": {"skipped": 1}, "US": {"skipped": 1}}
    with pytest.raises(IngestError, match="^DICOMDIR: DICOMDIR media"):  # strict: the first skip stops the run
        ingest(mixed_folder, tmp_path / "strict", "medical_ct", strict=True)


def test_a_blank_radiograph_is_not_ingested_but_said(mixed_folder, tmp_path):
    report = ingest(mixed_folder, tmp_path / "out", "medical_xray")
    assert report["files"]["ingested"] == 1 and report["files"]["no_chips"] == 1
    (line,) = report["no_chips"]
    assert line == {"path": "blank.dcm", "reason": "blank.dcm: no chips: 1 constant after robust window "
                                                   "p0.5-p99.5 (no VOI LUT in file)"}
    assert report["chips"]["dropped_constant"] == 1 and report["constant_chips"][0]["path"] == "blank.dcm"
    extended = ingest(mixed_folder, tmp_path / "more", "medical_xray",
                      dicom={"modalities": ["CR", "DX", "MR"]})  # the user's own modality list wins
    assert extended["modalities"]["MR"] == {"ingested": 1}


def test_every_file_failing_names_the_common_reasons_and_still_writes_the_report(mixed_folder, tmp_path):
    with pytest.raises(IngestFailed) as failed:
        ingest(mixed_folder, tmp_path / "out", "medical_mr", dicom={"modalities": ["PT"]})
    message = str(failed.value)
    assert "\n" not in message and "6 skipped" in message and "most common: " in message
    assert "(first: " in message and "read by preset medical_xray" in message
    assert failed.value.report["files"]["skipped"] == 6 and len(failed.value.report["skipped"]) == 6
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["paths"] = {key: str(tmp_path / key) for key in params["paths"]}
    params["grid"].update(domains=["medical"], cls_domains=["medical"], seg_domains=[], det_domains=[])
    params["data"] = {"medical": {"preset": "medical_mr", "source": str(mixed_folder),
                                  "dicom": {"modalities": ["PT"]}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([sys.executable, "-m", "stages.ingest", "--domain", "medical", "--params",
                           str(tmp_path / "params.yaml")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("error: ingest medical: ")
    written = json.loads((tmp_path / "reports" / "ingest" / "medical.json").read_text())
    assert {line["path"] for line in written["skipped"]} >= {"ct.dcm", "cr.dcm", "us.dcm", "DICOMDIR"}
    assert "Traceback" not in done.stderr


def test_files_without_patient_keys_are_grouped_by_weaker_keys_and_counted(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    ramp = (np.arange(32 * 32).reshape(32, 32) % 300).astype(np.int16)
    write_ct(source / "a.dcm", ramp)
    write_ct(source / "b.dcm", ramp, PatientID=None, StudyInstanceUID="1.2.3")
    write_ct(source / "c.dcm", ramp, PatientID=None, StudyInstanceUID=None, SeriesInstanceUID="1.2.4")
    write_ct(source / "d.dcm", ramp, PatientID=None, StudyInstanceUID=None)
    report = ingest(source, tmp_path / "out", "medical_ct")
    assert report["files"]["ingested"] == 4
    assert report["grouped_by"] == {"patient": 1, "study": 1, "series": 1, "file": 1}
    groups = {row["source"]: row["group"] for row in load_chipset(tmp_path / "out").manifest}
    assert len(set(groups.values())) == 4


def test_undecodable_files_give_one_reason_line_and_no_tracebacks(tmp_path, caplog):
    source = tmp_path / "src"
    source.mkdir()
    ds = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    from pydicom.encaps import encapsulate
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x13" * 200])
    ds.Modality = "CT"
    ds.save_as(source / "broken_j2k.dcm")
    write_ct(source / "ct.dcm", (np.arange(32 * 32).reshape(32, 32) % 400).astype(np.int16))
    with caplog.at_level(logging.INFO):
        report = ingest(source, tmp_path / "out", "medical_ct")
    (line,) = report["rejected"]
    assert line["reason"].startswith("broken_j2k.dcm: cannot decode pixel data (JPEG 2000")
    assert not [r for r in caplog.records if r.name.startswith("pydicom") and r.levelno >= logging.INFO]
    assert "Traceback" not in caplog.text


# --- PHI in paths -----------------------------------------------------------------------------------------------

def test_folders_named_after_the_patient_never_reach_an_output(tmp_path, caplog):
    source = tmp_path / "cd_export"
    folder = source / "DOE^JANE_1234567" / "ACC998877_CHEST"
    folder.mkdir(parents=True)
    ramp = (np.arange(32 * 32).reshape(32, 32) % 400).astype(np.int16)
    for k in range(3):
        write_ct(folder / f"IM000{k}", ramp, PatientID="1234567", PatientName="DOE^JANE", AccessionNumber="ACC998877")
    (folder / "IM0009").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")  # rejected: its line names it
    write_image(folder / "IM0010", radiograph((32, 32)), "MR", PatientID="1234567", PatientName="DOE^JANE")
    (source / "labels.csv").write_text("path,label\n" + "".join(
        f"DOE^JANE_1234567/ACC998877_CHEST/IM000{k},normal\n" for k in range(3)))
    with caplog.at_level(logging.DEBUG):
        report = ingest(source, tmp_path / "out", "medical_ct")
    assert report["files"]["ingested"] == 3 and report["files"]["rejected"] == 1 and report["files"]["skipped"] == 1
    written = json.dumps(report) + caplog.text + "".join(
        path.read_text() for path in (tmp_path / "out").iterdir() if path.suffix in {".csv", ".json"})
    for identifier in ("doe", "jane", "1234567", "acc998877"):
        assert identifier not in written.lower(), identifier
    assert load_chipset(tmp_path / "out").labels.tolist() == [0, 0, 0]  # labels still found by the real path
    sources = {row["source"] for row in load_chipset(tmp_path / "out").manifest}
    assert len(sources) == 3 and all(s.startswith("redacted-") and s.endswith(f"/IM000{k}")
                                     for k, s in zip(range(3), sorted(sources)))


# --- DICOM-SEG on a whole-slide image (TILED_FULL) ----------------------------------------------------------

def test_tiled_full_seg_places_its_frames_without_per_frame_groups(tmp_path):
    from pydicom.pixels.utils import pack_bits
    from tests.fixtures.dicom_files import dicom_object
    source = tmp_path / "slide"
    source.mkdir()
    rng = np.random.default_rng(5)
    tiles = rng.integers(30, 220, (4, 8, 8, 3)).astype(np.uint8)  # a 16x16 total pixel matrix in 2x2 tiles
    slide = write_image(source / "slide.dcm", tiles, "SM", "RGB", TotalPixelMatrixRows=16, TotalPixelMatrixColumns=16,
                        DimensionOrganizationType="TILED_FULL")
    uid = pydicom.dcmread(slide).SOPInstanceUID
    masks = rng.random((2, 4, 8, 8)) > 0.5  # segment 1 and 2, each over the 4 tiles
    seg = dicom_object("1.2.840.10008.5.1.4.1.1.66.4", "SEG")
    seg.Rows, seg.Columns, seg.NumberOfFrames = 8, 8, 8
    seg.TotalPixelMatrixRows, seg.TotalPixelMatrixColumns = 16, 16
    seg.DimensionOrganizationType, seg.SegmentationType = "TILED_FULL", "BINARY"
    seg.SamplesPerPixel, seg.PhotometricInterpretation, seg.PixelRepresentation = 1, "MONOCHROME2", 0
    seg.BitsAllocated, seg.BitsStored, seg.HighBit = 1, 1, 0
    seg.SegmentSequence = Sequence([sequence_item(SegmentNumber=n, SegmentLabel=label)
                                    for n, label in ((1, "tumour"), (2, "stroma"))])
    seg.ReferencedSeriesSequence = Sequence([sequence_item(SeriesInstanceUID=generate_uid(), ReferencedInstanceSequence=Sequence(
        [sequence_item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.77.1.6", ReferencedSOPInstanceUID=uid)]))])
    seg.PixelData = pack_bits(masks.reshape(8, 8, 8).astype(np.uint8))
    seg.save_as(source / "seg.dcm", enforce_file_format=True)
    report = ingest(source, tmp_path / "out", "medical_colour", chip_size=8)
    assert report["files"]["labels"] == 1 and not report["rejected"]
    chips = load_chipset(tmp_path / "out")
    classes = chips.mask_classes
    for row in chips.manifest:
        tile = int(row["frame"])
        expected = np.zeros((8, 8), np.uint8)
        smaller = 0 if masks[0].sum() < masks[1].sum() else 1  # overlaps: the smaller segment (over all tiles) wins
        for segment in (1 - smaller, smaller):
            expected[masks[segment, tile]] = classes.index(("tumour", "stroma")[segment])
        np.testing.assert_array_equal(chips.masks[int(row["chip_id"])], expected)


@pytest.mark.parametrize("name", ["SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_ybr_full_422_uncompressed.dcm",
                                  "examples_rgb_color.dcm", "examples_jpeg2k.dcm"])
def test_shipped_colour_files_decode_as_pydicom_converts_them(name):
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not shipped")
    from pipeline.io.dicom import open_dicom
    (image,) = list(open_dicom(Path(path), fast_header=False).images(keep_colour=True))
    np.testing.assert_array_equal(image.values, pydicom.dcmread(path).pixel_array.astype(np.float32))
    assert image.photometric == "RGB" and image.sample_max == 255


def test_shipped_mr_slices_are_normalised_by_their_own_series(tmp_path):
    first = get_testdata_file("4950")  # pydicom's dicomdirtests MR2: 7 slices of 3 series
    if first is None:
        pytest.skip("pydicom's dicomdirtests are not shipped")
    source = Path(first).parent
    ingest(source, tmp_path / "out", "medical_mr", chip_size=64)
    chips = chips_by_file(tmp_path / "out")
    series: dict[str, dict[str, np.ndarray]] = {}
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        plane = letterboxed(apply_modality_lut(ds.pixel_array, ds).astype(np.float32), 64)
        series.setdefault(ds.SeriesInstanceUID, {})[f"{path.name}#0"] = plane
    assert len(series) == 3 and set(chips) == {key for planes in series.values() for key in planes}
    for planes in series.values():
        low, high = np.percentile(np.concatenate([p.ravel() for p in planes.values()]), [0.5, 99.5])
        for key, plane in planes.items():
            np.testing.assert_allclose(chips[key][0][0], np.clip((plane - low) / (high - low), 0, 1), atol=1e-5)


# --- review follow-ups: windows as channels, noisy borders, boxes, the constant rule, PHI of failed files ------

def test_two_of_the_files_windows_as_channels_and_an_unusable_window_falls_back(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    pixels = radiograph((64, 64))
    write_image(source / "dx.dcm", pixels, "DX", WindowCenter=[2000, 3000], WindowWidth=[3000, 600])
    write_image(source / "bad.dcm", pixels, "DX", WindowCenter=2000, WindowWidth=0, PatientID="P2")
    report = ingest(source, tmp_path / "out", "medical_xray", dicom={"xray_channels": [{"voi": 1}, {"voi": 2}]})
    chips = chips_by_file(tmp_path / "out")
    assert load_chipset(tmp_path / "out").channel_names == ["voi_1", "voi_2"]
    assert np.abs(chips["dx.dcm#0"][0][0] - chips["dx.dcm#0"][0][1]).mean() > 0.1  # two different windows
    bad = [text for text in report["intensity"] if "unusable" in text]
    assert bad and "Window Width 0 not allowed for LINEAR" in bad[0] and "robust window p0.5-p99.5" in bad[0]
    assert chips["bad.dcm#0"][0].std() > 0.1  # read with the robust window, not rejected


def test_a_noisy_black_border_is_still_found(tmp_path):
    from pipeline.io.dicom_regions import constant_border_region
    frame = ultrasound_frame((60, 80)).astype(np.int16)
    noise = np.random.default_rng(1).integers(0, 3, frame.shape[:2])[..., None]  # lossy-compression noise
    noisy = np.clip(frame + np.where(frame == 0, noise, 0), 0, 255).astype(np.uint8)
    region = constant_border_region(noisy, 255)
    assert region is not None and not region[2:6, 2:14].any() and region[30, 40]
    assert constant_border_region(np.random.default_rng(2).integers(0, 255, (40, 40, 3)), 255) is None


def test_boxes_follow_a_letterboxed_radiograph(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    write_image(source / "dx.dcm", radiograph((48, 80)), "DX")
    coco = {"images": [{"id": 1, "file_name": "dx.dcm", "width": 80, "height": 48}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 10, 40, 20], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "nodule"}]}
    (source / "boxes.json").write_text(json.dumps(coco))
    ingest(source, tmp_path / "out", "medical_xray", chip_size=32)
    (box,) = load_chipset(tmp_path / "out").boxes[0]
    rows = round(48 * 32 / 80)  # as letterbox_chip places the image: 48 rows → 19, centred; 80 columns → 32
    top, y_scale = (32 - rows) // 2, rows / 48
    np.testing.assert_allclose(box[:4], [20 * 32 / 80, 10 * y_scale + top, 60 * 32 / 80, 30 * y_scale + top],
                               atol=0.01)


def test_the_constant_rule_keeps_thin_structures_and_drops_a_lone_hot_pixel():
    from pipeline.ingest.sources import constant_chips
    stripe, blob, hot = (np.zeros((1, 64, 64), np.float32) for _ in range(3))
    stripe[0, :, 5:16] = 0.5  # between the columns a regular subsample looks at
    blob[0, 20:40, 1:13] = 0.7
    hot[0, 3, 3] = 1.0
    everywhere = np.ones((64, 64), bool)
    assert constant_chips([stripe, blob, hot], [everywhere] * 3) == [False, False, True]


def test_files_that_fail_still_have_their_patient_folder_redacted(tmp_path):
    source = tmp_path / "export"
    ramp = (np.arange(32 * 32).reshape(32, 32) % 400).astype(np.int16)
    (source / "LI^WU").mkdir(parents=True)
    write_ct(source / "LI^WU" / "IM1", ramp, PatientID="42", PatientName="LI^WU")
    (source / "42").mkdir()
    write_ct(source / "42" / "IM1", ramp, PatientID="42", PatientName="LI^WU")
    (source / "WU_LI_scan").mkdir()
    write_ct(source / "WU_LI_scan" / "IM1", ramp, PatientID="42", PatientName="LI^WU")
    broken = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))  # undecodable, its header names its patient
    from pydicom.encaps import encapsulate
    broken.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x13" * 200])
    broken.Modality, broken.PatientName, broken.PatientID = "CT", "SMITH^JOHN", "777888"
    (source / "SMITH^JOHN_777888").mkdir()
    broken.save_as(source / "SMITH^JOHN_777888" / "IM1")
    (source / "MUSTER^ERIKA_4711").mkdir()
    write_image(source / "MUSTER^ERIKA_4711" / "IM1", radiograph((32, 32)), "MR", PatientID="4711",
                PatientName="MUSTER^ERIKA")
    report = ingest(source, tmp_path / "out", "medical_ct")
    assert report["files"]["ingested"] == 3 and report["files"]["rejected"] == 1 and report["files"]["skipped"] == 1
    assert report["modalities"]["CT"] == {"ingested": 3, "rejected": 1}
    written = json.dumps(report) + (tmp_path / "out" / "manifest.csv").read_text()
    for identifier in ("smith", "john", "777888", "muster", "erika", "4711", "li^wu", "wu_li", "/42/"):
        assert identifier not in written.lower(), identifier
    assert all(row["source"].startswith("redacted-") for row in load_chipset(tmp_path / "out").manifest)


def test_the_radiograph_and_mr_recipes_never_mirror_and_the_bias_field_is_smooth():
    from pipeline.augment import AUGMENT_PRESETS, BiasField
    for recipe in ("medical_xray", "medical_mr"):
        names = [row["transform"] for row in AUGMENT_PRESETS[recipe]]
        assert not {"HorizontalFlip", "VerticalFlip", "D4", "RandomRotate90", "ColorJitter", "HueSaturationValue",
                    "ToGray"} & set(names), recipe
    crop = AUGMENT_PRESETS["medical_xray"][0]
    assert crop["transform"] == "RandomResizedCrop" and crop["scale"][0] >= 0.7  # MoCo-CXR: keep most of it
    field = BiasField(coefficients=0.3, order=3, p=1.0)
    field.set_random_seed(3)
    flat = np.full((32, 32, 1), 0.5, np.float32)
    shaded = field(image=flat)["image"][..., 0] / 0.5  # the field itself
    assert shaded.min() > np.exp(-0.3 * 10) and shaded.max() < np.exp(0.3 * 10)  # |log field| ≤ 10 terms × 0.3
    assert np.abs(np.diff(shaded, axis=0)).max() < 0.2 and shaded.std() > 0.01  # smooth, not flat
    field.set_random_seed(3)
    np.testing.assert_array_equal(field(image=flat)["image"][..., 0] / 0.5, shaded)
