"""Which DICOM objects are images: non-image objects skipped with a reason, SEG / RTSTRUCT as labels,
files without extension or preamble, DICOMDIR."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian, GrayscaleSoftcopyPresentationStateStorage, KeyObjectSelectionDocumentStorage,
    RTStructureSetStorage, SegmentationStorage, generate_uid,
)

from pipeline.io import UnreadableImageError
from pipeline.io.dicom import (
    NotAnImageError, SegmentationObjectError, SegmentationReference, is_dicom_file, read_dicom,
    read_dicom_frames, read_segmentation_reference,
)
from tests.fixtures.dicom_files import pydicom_file, write_ct

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NON_IMAGES = [("reportsi.dcm", "Basic Text SR"), ("test-SR.dcm", "Comprehensive SR"),
              ("rtplan.dcm", "RT Plan"), ("rtdose.dcm", "RT Dose"), ("rtdose_1frame.dcm", "RT Dose"),
              ("waveform_ecg.dcm", "12-lead ECG Waveform"), ("ExplVR_LitEndNoMeta.dcm", "RT Ion Plan")]


def write_object(path, sop_class: str, **attributes):
    """A minimal object of any SOP class, no pixel data (pydicom's Dataset + FileMetaDataset recipe)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.StudyInstanceUID = "SECRET-ID", "Doe^Secret", generate_uid()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def assert_one_line_naming(error: Exception, path, *parts: str) -> None:
    message = str(error)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "SECRET" not in message and "Doe^" not in message  # never a patient identifier
    for part in parts:
        assert part in message


@pytest.mark.parametrize(("name", "sop_class"), NON_IMAGES)
def test_non_image_objects_are_skipped_with_reason(name, sop_class):
    path = pydicom_file(name)
    for reader in (read_dicom, read_dicom_frames):
        with pytest.raises(NotAnImageError) as error:
            reader(path)
        assert_one_line_naming(error.value, path, f"not an image ({sop_class}", "skipped")
    patient = str(pydicom.dcmread(path, force=True).get("PatientID", "") or "")
    assert not patient or patient not in str(error.value)


@pytest.mark.parametrize(("sop_class", "name"), [
    (GrayscaleSoftcopyPresentationStateStorage, "Presentation State"),
    (KeyObjectSelectionDocumentStorage, "Key Object Selection")])
def test_presentation_state_and_key_object_skipped(tmp_path, sop_class, name):
    path = write_object(tmp_path / "object", sop_class, Modality="PR")
    assert is_dicom_file(path)
    with pytest.raises(NotAnImageError) as error:
        read_dicom_frames(path)
    assert_one_line_naming(error.value, path, f"not an image (", name, "no pixel data), skipped")


def test_image_class_without_pixels_is_rejected_not_skipped(tmp_path):
    ds = pydicom.dcmread(write_ct(tmp_path / "header.dcm", np.zeros((4, 4), np.int16)))
    del ds.PixelData
    ds.save_as(tmp_path / "header.dcm")
    with pytest.raises(UnreadableImageError) as error:
        read_dicom_frames(tmp_path / "header.dcm")
    assert not isinstance(error.value, NotAnImageError)
    assert_one_line_naming(error.value, tmp_path / "header.dcm", "CT Image object without pixel data")


def test_seg_is_a_label_not_an_image():
    path = pydicom_file("liver_1frame.dcm")
    for reader in (read_dicom, read_dicom_frames):
        with pytest.raises(SegmentationObjectError) as error:
            reader(path)
        assert_one_line_naming(error.value, path, "segmentation object (Segmentation)", "skipped")
    ds = pydicom.dcmread(path)
    source = ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    reference = read_segmentation_reference(path)
    assert isinstance(reference, SegmentationReference) and reference.kind == "SEG"
    assert reference.sop_instance_uid == ds.SOPInstanceUID
    assert source.ReferencedSOPInstanceUID in reference.referenced_sop_instance_uids
    assert reference.segment_labels == {1: "Liver"}
    # the file keeps 3 per-frame items for its 1 frame (pydicom cut it down): frames follow NumberOfFrames
    assert len(reference.frames) == 1 and reference.frames[0].segment_number == 1
    assert reference.frames[0].referenced_sop_instance_uid == source.ReferencedSOPInstanceUID


def test_rtstruct_without_preamble_is_recognised():
    path = pydicom_file("rtstruct.dcm")
    assert is_dicom_file(path)  # pydicom's test RTSTRUCT is a raw stream without preamble or file meta
    with pytest.raises(SegmentationObjectError, match="segmentation object"):
        read_dicom_frames(path)
    reference = read_segmentation_reference(path)
    assert reference.kind == "RTSTRUCT" and reference.frames == ()
    assert reference.segment_labels == {1: "patient", 2: "Isocenter 1", 3: "Isocenter 2"}
    assert reference.referenced_sop_instance_uids == ()  # its contours name no image


def test_rtstruct_references_match_the_ct_slices(tmp_path):
    slices = [pydicom.dcmread(write_ct(tmp_path / f"ct{i}.dcm", np.zeros((4, 4), np.int16)))
              for i in range(3)]
    image = Dataset()
    image.ReferencedSOPInstanceUID = slices[0].SOPInstanceUID
    contour = Dataset()
    contour.ContourImageSequence = Sequence([image])
    roi_contour = Dataset()
    roi_contour.ContourSequence = Sequence([contour])
    series = Dataset()
    series.ContourImageSequence = Sequence([_ref(s.SOPInstanceUID) for s in slices[1:]])
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([series])
    frame_of_reference = Dataset()
    frame_of_reference.RTReferencedStudySequence = Sequence([study])
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 7, "GTV"
    path = write_object(tmp_path / "rs", RTStructureSetStorage, ROIContourSequence=Sequence([roi_contour]),
                        ReferencedFrameOfReferenceSequence=Sequence([frame_of_reference]),
                        StructureSetROISequence=Sequence([roi]))
    reference = read_segmentation_reference(path)
    assert reference.segment_labels == {7: "GTV"}
    assert reference.referenced_sop_instance_uids == tuple(sorted(s.SOPInstanceUID for s in slices))


def _ref(uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPInstanceUID = uid
    return item


def test_segmentation_reference_of_an_image_is_a_clear_error():
    path = pydicom_file("CT_small.dcm")
    with pytest.raises(UnreadableImageError) as error:
        read_segmentation_reference(path)
    assert_one_line_naming(error.value, path, "not a segmentation object (CT Image)")


def test_dicomdir_is_not_an_image_file_and_is_not_read_as_an_image(caplog):
    path = pydicom_file("DICOMDIR")
    with caplog.at_level(logging.DEBUG, logger="pipeline.io"):
        assert not is_dicom_file(path)
    assert f"{path}: DICOMDIR media directory index, not an image, skipped" in caplog.text
    assert is_dicom_file(path, include_dicomdir=True)  # ingest lists it, to count it as skipped
    with pytest.raises(NotAnImageError) as error:
        read_dicom_frames(path)
    assert_one_line_naming(error.value, path, "DICOMDIR", "skipped")


def test_files_without_extension_or_preamble(tmp_path):
    no_extension = tmp_path / "IM000001"
    shutil.copy(pydicom_file("liver_1frame.dcm"), no_extension)
    assert is_dicom_file(no_extension)
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    del ds.file_meta
    ds.preamble = None
    ds.save_as(tmp_path / "RAWCT", implicit_vr=True, little_endian=True)  # a bare dataset stream
    assert (tmp_path / "RAWCT").read_bytes()[:2] == b"\x08\x00" and is_dicom_file(tmp_path / "RAWCT")
    (raw,) = read_dicom_frames(tmp_path / "RAWCT")
    np.testing.assert_array_equal(raw.values, read_dicom(pydicom_file("CT_small.dcm")).values)
    assert is_dicom_file(pydicom_file("ExplVR_BigEndNoMeta.dcm"))  # big-endian raw stream


def test_raw_stream_sniffing_is_conservative(tmp_path):
    lookalike = tmp_path / "lookalike"
    lookalike.write_bytes(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + bytes(200))  # no SOP class
    noise = tmp_path / "noise"
    noise.write_bytes(b"\x08\x00" + np.random.default_rng(0).bytes(4000))
    for path in (lookalike, noise, pydicom_file("no_meta.dcm")):
        assert not is_dicom_file(path)
        with pytest.raises(UnreadableImageError) as error:
            read_dicom_frames(path)
        assert_one_line_naming(error.value, path, "not a readable DICOM file")


def test_sop_instance_uid_on_every_image():
    path = pydicom_file("CT_small.dcm")
    assert read_dicom(path).sop_instance_uid == pydicom.dcmread(path).SOPInstanceUID
    assert read_dicom_frames(path)[0].sop_instance_uid == pydicom.dcmread(path).SOPInstanceUID


def test_damaged_object_without_sop_class_is_rejected_not_skipped(tmp_path):
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")  # magic, then nothing usable
    assert is_dicom_file(path)  # the magic says DICOM: the reader decides, with a reason
    with pytest.raises(UnreadableImageError) as error:
        read_dicom_frames(path)
    assert not isinstance(error.value, NotAnImageError)
    assert_one_line_naming(error.value, path, "no SOP Class UID and no pixel data")


def test_seg_frames_on_a_multi_frame_source(tmp_path):
    """A SEG drawn on frames 2 and 5 of one enhanced image: each frame keeps the 1-based source frame."""
    source_uid = generate_uid()
    per_frame = []
    for segment, frame_number in ((1, 2), (2, 5)):
        image = _ref(source_uid)
        image.ReferencedFrameNumber = frame_number
        derivation = Dataset()
        derivation.SourceImageSequence = Sequence([image])
        identification = Dataset()
        identification.ReferencedSegmentNumber = segment
        item = Dataset()
        item.DerivationImageSequence = Sequence([derivation])
        item.SegmentIdentificationSequence = Sequence([identification])
        per_frame.append(item)
    segments = []
    for number, label in ((1, "Liver"), (2, "Spleen")):
        segment = Dataset()
        segment.SegmentNumber, segment.SegmentLabel = number, label
        segments.append(segment)
    path = write_object(tmp_path / "seg", SegmentationStorage, NumberOfFrames=2,
                        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
                        SegmentSequence=Sequence(segments))
    reference = read_segmentation_reference(path)
    assert reference.segment_labels == {1: "Liver", 2: "Spleen"}
    assert reference.referenced_sop_instance_uids == (source_uid,)
    assert [(f.segment_number, f.referenced_frame_number) for f in reference.frames] == [(1, 2), (2, 5)]
