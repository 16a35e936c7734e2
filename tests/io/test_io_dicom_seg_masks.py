"""DICOM-SEG and RTSTRUCT → masks matched to their images by SOP Instance UID, and through ingest.

Fixtures are written field by field with pydicom in the test (the Dataset + FileMetaDataset recipe); the
references are pydicom's own ``pixel_array`` of the SEG frames and pixel bounds worked out by hand from the
image plane. The last tests use the real dcmqi CT + SEG files and skip when ../shared/realdata is absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage, RTStructureSetStorage, SegmentationStorage, generate_uid,
)

from pipeline.config_data import DomainDataConfig
from pipeline.data.chips import load_chipset
from pipeline.ingest.folder import IngestError, ingest_folder
from pipeline.io import UnreadableImageError
from pipeline.io.dicom_rtstruct import image_plane, patient_to_pixel, read_rtstruct_layers
from pipeline.io.dicom_seg import LABEL_MAP_SOP_CLASS, read_seg_layers
from pipeline.presets import PRESETS
from tests.fixtures.dicom_items import sequence_item
from tests.fixtures.dicom_files import dicom_object, write_ct
from tests.fixtures import paths

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REALDATA = paths.REALDATA / "dcmqi_ct_seg" / "segmentations"
SHAPE = (10, 13)  # 130 pixels: BINARY frames do not end on a byte boundary
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]  # rows run from head to feet


# --- writers -------------------------------------------------------------------------------------------

def write_slice(path: Path, position=(-100.5, -50.25, 30.0), spacing=(0.8, 0.6), orientation=AXIAL,
                shape=SHAPE, **attributes) -> Dataset:
    """A CT slice with a non-trivial plane; returns its header."""
    stored = (1004 + np.arange(shape[1], dtype=np.int16) * 8)[None].repeat(shape[0], 0)  # -20 HU ramp, not blank
    write_ct(path, stored, ImagePositionPatient=list(position), ImageOrientationPatient=list(orientation),
             PixelSpacing=list(spacing), SliceThickness=2.0, **attributes)
    return pydicom.dcmread(path, stop_before_pixels=True)


def write_seg(path: Path, frames: list[tuple[int | None, str, np.ndarray]], labels: dict[int, str],
              segmentation_type: str = "BINARY", sop_class: str = SegmentationStorage,
              series_uids: list[str] | None = None, **attributes) -> Path:
    """A DICOM-SEG; ``frames``: (ReferencedSegmentNumber, None in a label map; source UID; (H, W) values)."""
    ds = dicom_object(sop_class, "SEG")
    stack = np.stack([values for _, _, values in frames])
    ds.Rows, ds.Columns, ds.NumberOfFrames = stack.shape[1], stack.shape[2], len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    bits = 1 if segmentation_type == "BINARY" else 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.SegmentationType = segmentation_type
    ds.SegmentSequence = Sequence([sequence_item(SegmentNumber=n, SegmentLabel=label) for n, label in labels.items()])
    uids = series_uids if series_uids is not None else list(dict.fromkeys(uid for _, uid, _ in frames))
    instances = [sequence_item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=uid) for uid in uids]
    ds.ReferencedSeriesSequence = Sequence([sequence_item(SeriesInstanceUID=generate_uid(),
                                                  ReferencedInstanceSequence=Sequence(instances))])
    ds.PerFrameFunctionalGroupsSequence = Sequence([_frame_group(segment, uid) for segment, uid, _ in frames])
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pack_bits(stack.astype(np.uint8)) if bits == 1 else stack.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _frame_group(segment: int | None, uid: str) -> Dataset:
    source = sequence_item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=uid)
    group = sequence_item(DerivationImageSequence=Sequence([sequence_item(SourceImageSequence=Sequence([source]))]))
    if segment is not None:
        group.SegmentIdentificationSequence = Sequence([sequence_item(ReferencedSegmentNumber=segment)])
    return group


def write_rtstruct(path: Path, rois: dict[int, str], contours: list[tuple[int, str, np.ndarray]]) -> Path:
    """An RTSTRUCT: ``contours`` = (ROI number, image UID, (N, 3) patient points in mm), all CLOSED_PLANAR."""
    ds = dicom_object(RTStructureSetStorage, "RTSTRUCT")
    ds.StructureSetROISequence = Sequence([sequence_item(ROINumber=n, ROIName=name) for n, name in rois.items()])
    by_roi: dict[int, list[Dataset]] = {number: [] for number in rois}
    for number, uid, points in contours:
        image = sequence_item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=uid)
        by_roi[number].append(sequence_item(ContourGeometricType="CLOSED_PLANAR", NumberOfContourPoints=len(points),
                                    ContourData=[f"{v:.4f}" for v in np.ravel(points)],
                                    ContourImageSequence=Sequence([image])))
    ds.ROIContourSequence = Sequence([sequence_item(ReferencedROINumber=n, ContourSequence=Sequence(items))
                                      for n, items in by_roi.items()])
    ds.save_as(path, enforce_file_format=True)
    return path


def square(plane: Dataset, first: tuple[float, float], last: tuple[float, float]) -> np.ndarray:
    """(4, 3) patient corners of the in-plane rectangle between two (u, v) offsets in mm from the origin,
    u along the rows (first cosine), v along the columns (second cosine)."""
    origin = np.asarray(plane.ImagePositionPatient, float)
    cosines = np.asarray(plane.ImageOrientationPatient, float)
    corners = [(first[0], first[1]), (last[0], first[1]), (last[0], last[1]), (first[0], last[1])]
    return np.array([origin + u * cosines[:3] + v * cosines[3:] for u, v in corners])


# --- DICOM-SEG decoding --------------------------------------------------------------------------------

def test_binary_seg_frames_land_on_their_source_images(tmp_path):
    rng = np.random.default_rng(0)
    slices = [write_slice(tmp_path / f"ct{i}.dcm") for i in range(3)]
    masks = [rng.random(SHAPE) > 0.6 for _ in range(3)]
    frames = [(1, slices[0].SOPInstanceUID, masks[0]), (1, slices[2].SOPInstanceUID, masks[1]),
              (2, slices[2].SOPInstanceUID, masks[2])]
    path = write_seg(tmp_path / "seg.dcm", frames, {1: "Liver", 2: "Lesion"})
    decoded = read_seg_layers(path)
    reference = pydicom.dcmread(path).pixel_array  # pydicom's own unpacking of the 1-bit frames
    liver, lesion = decoded.layers
    assert (liver.number, liver.label, lesion.label) == (1, "Liver", "Lesion") and decoded.unplaced == 0
    assert set(liver.masks) == {(slices[0].SOPInstanceUID, 1), (slices[2].SOPInstanceUID, 1)}
    np.testing.assert_array_equal(liver.masks[(slices[0].SOPInstanceUID, 1)], reference[0] == 1)
    np.testing.assert_array_equal(liver.masks[(slices[2].SOPInstanceUID, 1)], masks[1])
    np.testing.assert_array_equal(lesion.masks[(slices[2].SOPInstanceUID, 1)], reference[2] == 1)
    assert liver.area == int(masks[0].sum() + masks[1].sum())


def test_fractional_seg_is_thresholded_at_half_the_maximum(tmp_path):
    uid = write_slice(tmp_path / "ct.dcm").SOPInstanceUID
    values = np.zeros(SHAPE, np.uint8)
    values[0, :5] = [99, 100, 101, 200, 1]
    path = write_seg(tmp_path / "seg.dcm", [(1, uid, values)], {1: "Tumour"}, "FRACTIONAL",
                     MaximumFractionalValue=200, SegmentationFractionalType="PROBABILITY")
    (layer,) = read_seg_layers(path).layers
    np.testing.assert_array_equal(layer.masks[(uid, 1)], pydicom.dcmread(path).pixel_array >= 100)
    assert layer.masks[(uid, 1)][0, :5].tolist() == [False, True, True, True, False]


def test_label_map_pixels_are_segment_numbers(tmp_path):
    uids = [write_slice(tmp_path / f"ct{i}.dcm").SOPInstanceUID for i in range(2)]
    frames = np.zeros((2, *SHAPE), np.uint8)
    frames[0, 2:5, 2:6], frames[1, 1:3, :] = 1, 2
    frames[1, -1, :] = 5  # padding: belongs to no segment
    path = write_seg(tmp_path / "labelmap.dcm", [(None, uids[0], frames[0]), (None, uids[1], frames[1])],
                     {0: "Background", 1: "Liver", 2: "Spleen"}, "LABELMAP", LABEL_MAP_SOP_CLASS,
                     PixelPaddingValue=5)
    background, liver, spleen = read_seg_layers(path).layers
    np.testing.assert_array_equal(liver.masks[(uids[0], 1)], frames[0] == 1)
    np.testing.assert_array_equal(spleen.masks[(uids[1], 1)], frames[1] == 2)
    assert (uids[0], 1) not in spleen.masks  # no spleen pixel on the first image
    assert background.masks[(uids[0], 1)][-1].all() and not background.masks[(uids[1], 1)][-1].any()


def test_seg_with_too_few_frame_groups_is_a_one_line_error(tmp_path):
    uid = write_slice(tmp_path / "ct.dcm").SOPInstanceUID
    path = write_seg(tmp_path / "seg.dcm", [(1, uid, np.ones(SHAPE))] * 2, {1: "Liver"})
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[1]
    ds.save_as(path)
    with pytest.raises(UnreadableImageError) as error:
        read_seg_layers(path)
    assert str(error.value) == f"{path}: 2 frames but 1 per-frame functional groups to place them"


# --- RTSTRUCT rasterisation ----------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", [AXIAL, CORONAL], ids=["axial", "coronal"])
def test_rtstruct_square_is_rasterised_where_the_plane_puts_it(tmp_path, orientation):
    """Square from 3.3 to 7.9 mm along the rows and 2.0 to 6.2 mm along the columns of a 0.6 × 0.8 mm grid:
    by hand, columns 3.3/0.6 = 5.5 … 7.9/0.6 = 13.17 and rows 2.0/0.8 = 2.5 … 6.2/0.8 = 7.75."""
    plane = write_slice(tmp_path / "ct.dcm", shape=(12, 20), orientation=orientation)
    path = write_rtstruct(tmp_path / "rs.dcm", {3: "GTV"},
                          [(3, plane.SOPInstanceUID, square(plane, (3.3, 2.0), (7.9, 6.2)))])
    key = (plane.SOPInstanceUID, 1)
    (gtv,) = read_rtstruct_layers(path, {key: image_plane(plane)}).layers
    rows, cols = np.mgrid[:12, :20]
    inside = (cols >= 5.5) & (cols <= 13.17) & (rows >= 2.5) & (rows <= 7.75)  # pixel centres in the square
    grown = (cols >= 4.5) & (cols <= 14.17) & (rows >= 1.5) & (rows <= 8.75)
    shrunk = (cols >= 6.5) & (cols <= 12.17) & (rows >= 3.5) & (rows <= 6.75)
    mask = gtv.masks[key]
    assert gtv.label == "GTV" and mask.shape == (12, 20)
    assert (mask[shrunk]).all() and not (mask & ~grown).any()  # within one pixel at every edge
    assert abs(int(mask.sum()) - int(inside.sum())) <= 2 * (8 + 6)


def test_patient_to_pixel_against_the_forward_mapping():
    plane = Dataset()
    plane.ImagePositionPatient, plane.PixelSpacing = [10.0, -20.0, 5.0], [0.7, 1.3]
    plane.Rows, plane.Columns = 8, 9
    u, v = np.array([1.0, 1.0, 0.0]) / np.sqrt(2), np.array([0.0, 0.0, -1.0])  # oblique rows, columns down z
    plane.ImageOrientationPatient = [*u, *v]
    cols, rows = np.array([0.0, 3.5, 8.0]), np.array([0.0, 2.0, 7.25])
    points = np.array([10.0, -20.0, 5.0]) + cols[:, None] * 1.3 * u + rows[:, None] * 0.7 * v
    pixels, off_plane = patient_to_pixel(points, image_plane(plane))
    np.testing.assert_allclose(pixels, np.stack([cols, rows], axis=1), atol=1e-9)
    np.testing.assert_allclose(off_plane, 0.0, atol=1e-9)


def test_rtstruct_inner_contour_is_a_hole(tmp_path):
    plane = write_slice(tmp_path / "ct.dcm", position=(0.0, 0.0, 0.0), spacing=(1.0, 1.0), shape=(20, 20))
    uid = plane.SOPInstanceUID
    path = write_rtstruct(tmp_path / "rs.dcm", {1: "Ring"}, [(1, uid, square(plane, (2, 2), (17, 17))),
                                                           (1, uid, square(plane, (7, 7), (12, 12)))])
    mask = read_rtstruct_layers(path, {(uid, 1): image_plane(plane)}).layers[0].masks[(uid, 1)]
    assert mask[4, 4] and mask[15, 15] and not mask[9:11, 9:11].any() and not mask[0].any()


def test_rtstruct_contour_off_its_plane_is_a_one_line_error(tmp_path):
    plane = write_slice(tmp_path / "ct.dcm")
    corners = square(plane, (1, 1), (5, 5)) + np.array([0.0, 0.0, 4.0])  # 4 mm above a 2 mm slice
    path = write_rtstruct(tmp_path / "rs.dcm", {1: "GTV"}, [(1, plane.SOPInstanceUID, corners)])
    with pytest.raises(UnreadableImageError) as error:
        read_rtstruct_layers(path, {(plane.SOPInstanceUID, 1): image_plane(plane)})
    assert str(error.value).startswith(f"{path}: a contour of ROI 1 lies 4.0 mm off the plane")


# --- through ingest ------------------------------------------------------------------------------------

def ingest(source: Path, out: Path, chip_size: int = 16, strict: bool = False, workers: int = 1) -> dict:
    out.mkdir(exist_ok=True)
    cfg = DomainDataConfig(preset="medical_ct", source=str(source), chip_size=chip_size,
                           split_fractions=(1.0, 0.0, 0.0))
    return ingest_folder(source, cfg, PRESETS["medical_ct"], 0, out, workers=workers, strict=strict)


def chip_masks(out: Path) -> dict[str, np.ndarray]:
    chips = load_chipset(out)
    return {row["source"]: chips.masks[int(row["chip_id"])] for row in chips.manifest}


@pytest.fixture
def labelled(tmp_path):
    """Three slices: SEG "Liver" on 0 and 1, RTSTRUCT "GTV" square on 2, slice 3 unlabelled."""
    source = tmp_path / "source"
    source.mkdir()
    slices = [write_slice(source / f"ct{i}.dcm", position=(0.0, 0.0, 2.0 * i), spacing=(1.0, 1.0),
                          shape=(16, 16)) for i in range(4)]
    liver = np.zeros((2, 16, 16), bool)
    liver[0, 3:9, 4:12], liver[1, 5:14, 2:7] = True, True
    write_seg(source / "seg.dcm", [(1, slices[i].SOPInstanceUID, liver[i]) for i in range(2)], {1: "Liver"})
    gtv = square(slices[2], (4, 4), (10, 10))
    write_rtstruct(source / "rs.dcm", {4: "GTV"}, [(4, slices[2].SOPInstanceUID, gtv)])
    (source / "classes.json").write_text(json.dumps({"image_classes": [], "mask_classes": {"0": "background",
                                                                                           "1": "gtv"}}))
    return source, slices, liver


def test_ingest_gives_referenced_images_their_masks(labelled, tmp_path):
    source, slices, liver = labelled
    report = ingest(source, tmp_path / "out")
    masks = chip_masks(tmp_path / "out")
    # "GTV" matches classes.json's "gtv" (any case); "Liver" is new and gets the next id
    assert load_chipset(tmp_path / "out").mask_classes == ["background", "gtv", "Liver"]
    np.testing.assert_array_equal(masks["ct0.dcm"], liver[0] * 2)
    np.testing.assert_array_equal(masks["ct1.dcm"], liver[1] * 2)
    expected = np.zeros((16, 16), np.uint8)
    expected[4:11, 4:11] = 1  # pixel centres 4 … 10 on a 1 mm grid starting at 0
    np.testing.assert_array_equal(masks["ct2.dcm"], expected)
    assert (masks["ct3.dcm"] == 255).all()  # no segmentation references it: no mask
    assert report["files"] == {"seen": 6, "ingested": 4, "no_chips": 0, "rejected": 0, "skipped": 0, "labels": 2}
    assert report["labels"] == [{"path": "rs.dcm", "kind": "RTSTRUCT", "images": 1, "segments": ["gtv"]},
                                {"path": "seg.dcm", "kind": "SEG", "images": 2, "segments": ["Liver"]}]


def test_masks_are_resized_like_png_masks_and_padding_is_ignored(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    stored = (1004 + np.arange(24, dtype=np.int16) * 8)[None].repeat(24, 0)  # a ramp: not a blank chip
    stored[:, :3] = -2000  # padding
    write_ct(source / "ct.dcm", stored, PixelPaddingValue=-2000)
    uid = pydicom.dcmread(source / "ct.dcm").SOPInstanceUID
    segment = np.zeros((24, 24), bool)
    segment[5:20, 1:17] = True
    write_seg(source / "seg.dcm", [(1, uid, segment)], {1: "Liver"})
    ingest(source, tmp_path / "out", chip_size=16)
    expected = cv2.resize(segment.astype(np.uint8), (16, 16), interpolation=cv2.INTER_NEAREST)
    valid = cv2.resize((stored != -2000).astype(np.uint8), (16, 16), interpolation=cv2.INTER_NEAREST) > 0
    np.testing.assert_array_equal(chip_masks(tmp_path / "out")["ct.dcm"], np.where(valid, expected, 255))


def test_smaller_segment_wins_where_segments_overlap(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    uid = write_slice(source / "ct.dcm", shape=(16, 16)).SOPInstanceUID
    organ, tumour, equal = (np.zeros((16, 16), bool) for _ in range(3))
    organ[2:14, 2:14], tumour[5:8, 5:8], equal[10:13, 10:13] = True, True, True
    write_seg(source / "seg.dcm", [(1, uid, tumour), (2, uid, organ), (3, uid, equal)],
              {1: "Tumour", 2: "Organ", 3: "Cyst"})  # the tumour has the lowest number, yet wins
    ingest(source, tmp_path / "out")
    mask = chip_masks(tmp_path / "out")["ct.dcm"]
    names = load_chipset(tmp_path / "out").mask_classes
    assert names == ["background", "Tumour", "Organ", "Cyst"]
    assert mask[6, 6] == 1 and mask[3, 3] == 2 and mask[11, 11] == 3 and mask[0, 0] == 0


def test_seg_replaces_a_png_mask_of_the_same_image(labelled, tmp_path):
    source, _, liver = labelled
    (source / "masks").mkdir()
    cv2.imwrite(str(source / "masks" / "ct0.png"), np.ones((16, 16), np.uint8))
    cv2.imwrite(str(source / "masks" / "ct3.png"), np.ones((16, 16), np.uint8))
    ingest(source, tmp_path / "out")
    masks = chip_masks(tmp_path / "out")
    np.testing.assert_array_equal(masks["ct0.dcm"], liver[0] * 2)  # the SEG, not the PNG
    assert (masks["ct3.dcm"] == 1).all()  # no SEG for this one: its PNG


def test_labels_of_absent_images_are_reported_and_the_run_goes_on(labelled, tmp_path):
    source, slices, _ = labelled
    absent = generate_uid()
    (source / "other").mkdir()
    write_seg(source / "other" / "seg.dcm", [(1, absent, np.ones((16, 16), bool))], {1: "Spleen"})
    write_rtstruct(source / "other" / "rs.dcm", {1: "PTV"}, [(1, absent, square(slices[0], (1, 1), (5, 5)))])
    report = ingest(source, tmp_path / "out")
    skipped = {line["path"]: line["reason"] for line in report["skipped"]}
    tail = "labels 1 image(s), none of them in the source folder, skipped"
    assert skipped == {"other/rs.dcm": f"other/rs.dcm: RTSTRUCT {tail}",
                       "other/seg.dcm": f"other/seg.dcm: SEG {tail}"}
    assert report["files"]["labels"] == 2 and report["files"]["ingested"] == 4  # the run went on
    assert "Spleen" not in load_chipset(tmp_path / "out").mask_classes
    with pytest.raises(IngestError, match=r"^other/rs\.dcm: RTSTRUCT labels 1 image"):
        ingest(source, tmp_path / "strict", strict=True)


def test_partly_absent_images_are_noted_on_the_used_entry(labelled, tmp_path):
    source, slices, liver = labelled
    write_seg(source / "seg.dcm", [(1, slices[0].SOPInstanceUID, liver[0])], {1: "Liver"},
              series_uids=[slices[0].SOPInstanceUID, generate_uid()])
    report = ingest(source, tmp_path / "out", strict=True)  # not fatal, even when strict
    entry = {line["path"]: line for line in report["labels"]}["seg.dcm"]
    assert entry["reason"] == ("seg.dcm: 1 of 2 referenced images are not in the source folder, their masks "
                               "are not used")


def test_malformed_seg_is_rejected_and_strict_stops_at_it(labelled, tmp_path):
    source, slices, _ = labelled
    write_seg(source / "seg.dcm", [(1, slices[0].SOPInstanceUID, np.ones((8, 8), bool))], {1: "Liver"})
    report = ingest(source, tmp_path / "out")
    assert report["rejected"] == [{"path": "seg.dcm", "reason": "seg.dcm: segment 1 is 8x8 pixels, its image "
                                                                "ct0.dcm 16x16"}]
    assert report["files"]["ingested"] == 4 and report["files"]["labels"] == 1  # the RTSTRUCT is still used
    with pytest.raises(IngestError) as error:
        ingest(source, tmp_path / "strict", strict=True)
    assert str(error.value) == report["rejected"][0]["reason"]


def test_worker_processes_get_the_same_masks(labelled, tmp_path):
    source, _, _ = labelled
    ingest(source, tmp_path / "one")
    ingest(source, tmp_path / "two", workers=2)  # the masks travel to the worker processes inside the tasks
    assert (tmp_path / "one" / "masks.npy").read_bytes() == (tmp_path / "two" / "masks.npy").read_bytes()

# --- real files: dcmqi CT slices with their DICOM-SEG ---------------------------------------------------

@pytest.fixture
def dcmqi_ct(tmp_path):
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is not present")
    source = tmp_path / "source"
    shutil.copytree(REALDATA / "ct-3slice", source / "ct")
    for name in ("liver.dcm", "partial_overlaps.dcm"):
        shutil.copy2(REALDATA / name, source / name)
    return source


def _expected_frames(seg_path: Path, folder: Path) -> dict[tuple[str, int], np.ndarray]:
    """(slice file, segment number) → bool mask, straight from pydicom's pixel_array of the SEG."""
    by_uid = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p.name for p in folder.iterdir()}
    seg = pydicom.dcmread(seg_path)
    expected = {}
    for frame, group in zip(seg.pixel_array, seg.PerFrameFunctionalGroupsSequence):
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        expected[(by_uid[uid], segment)] = frame == 1
    return expected


def test_real_ct_slices_get_their_liver_seg(dcmqi_ct, tmp_path):
    (dcmqi_ct / "partial_overlaps.dcm").unlink()
    report = ingest(dcmqi_ct, tmp_path / "out", chip_size=512)  # native grid: counts compare exactly
    masks = chip_masks(tmp_path / "out")
    assert report["labels"] == [{"path": "liver.dcm", "kind": "SEG", "images": 3, "segments": ["Liver"]}]
    for (name, _), liver in _expected_frames(dcmqi_ct / "liver.dcm", dcmqi_ct / "ct").items():
        ds = pydicom.dcmread(dcmqi_ct / "ct" / name)
        valid = ds.pixel_array != ds.PixelPaddingValue
        mask = masks[f"ct/{name}"]
        assert int((mask == 1).sum()) == int((liver & valid).sum()) > 30000
        assert int((mask == 255).sum()) == int((~valid).sum())


def test_real_overlapping_segments_smaller_one_wins(dcmqi_ct, tmp_path):
    (dcmqi_ct / "liver.dcm").unlink()
    ingest(dcmqi_ct, tmp_path / "out", chip_size=512)
    masks = chip_masks(tmp_path / "out")
    names = load_chipset(tmp_path / "out").mask_classes
    expected = _expected_frames(dcmqi_ct / "partial_overlaps.dcm", dcmqi_ct / "ct")
    green, orange, purple = (expected[("02.dcm", n)] for n in (1, 2, 3))  # on 02: 9602, 11888, 117 pixels
    assert (green & orange).any() and green.sum() < orange.sum()
    mask = masks["ct/02.dcm"]
    assert (mask[green & orange] == names.index("GREEN")).all()  # GREEN has fewer pixels over all slices
    only_orange = orange & ~green & ~purple & (mask != 255)
    assert only_orange.any() and (mask[only_orange] == names.index("ORANGE")).all()
