"""Multi-frame / enhanced multi-frame reading and every transfer syntax, against pydicom's own pixel pipeline.

Lossless syntaxes must give the identical array; lossy ones stay within the tolerances stated per test.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from openjpeg.utils import get_openjpeg_version
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000, DeflatedExplicitVRLittleEndian, EnhancedCTImageStorage, ExplicitVRLittleEndian, HTJ2KLossless,
    JPEG2000Lossless, JPEGBaseline8Bit, MPEG2MPML, RLELossless, generate_uid,
)

from pipeline.io import UnreadableImageError
from pipeline.io.dicom import NotAnImageError, read_dicom, read_dicom_frames
from tests.fixtures.dicom_items import sequence_item
from tests.fixtures.dicom_files import MR_LOSSLESS_VARIANTS, pydicom_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SLOPES, INTERCEPTS = [1.0, 2.0, 0.5], [-1024.0, -2048.0, 10.0]
GREY_FILES = ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm",
              "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "693_J2KI.dcm", "JPEG2000.dcm",
              "JPGExtended.dcm", "J2K_pixelrep_mismatch.dcm", "image_dfl.dcm", "MR_small_padded.dcm", "6154"]


def enhanced_ct(stored: np.ndarray, per_frame: bool = True) -> Dataset:
    """An Enhanced CT dataset, (F, H, W) int16 stored values, frame i rescaled by SLOPES[i], INTERCEPTS[i].

    ``per_frame=False`` puts one rescale (SLOPES[1], INTERCEPTS[1]) in the shared functional groups instead.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = EnhancedCTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyInstanceUID = "CT", "PAT-E", generate_uid()
    ds.NumberOfFrames, (ds.Rows, ds.Columns) = len(stored), stored.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    frames = [Dataset() for _ in stored]
    for i, frame in enumerate(frames):
        frame.PixelMeasuresSequence = Sequence([sequence_item(PixelSpacing=[0.5 + i, 0.25 + i])])
        if per_frame:
            frame.PixelValueTransformationSequence = Sequence([sequence_item(
                RescaleSlope=SLOPES[i], RescaleIntercept=INTERCEPTS[i], RescaleType="HU")])
    shared = Dataset()
    if not per_frame:
        shared.PixelValueTransformationSequence = Sequence([sequence_item(
            RescaleSlope=SLOPES[1], RescaleIntercept=INTERCEPTS[1], RescaleType="HU")])
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PixelData = stored.astype("<i2").tobytes()
    return ds


@pytest.fixture
def stored_frames() -> np.ndarray:
    return np.random.default_rng(3).integers(-2000, 3000, size=(3, 40, 36)).astype(np.int16)


def test_enhanced_ct_per_frame_rescale(tmp_path, stored_frames):
    path = tmp_path / "enhanced.dcm"
    enhanced_ct(stored_frames).save_as(path, enforce_file_format=True)
    frames = read_dicom_frames(path)
    ds = pydicom.dcmread(path)
    assert [f.frame_index for f in frames] == [0, 1, 2]
    assert {f.sop_instance_uid for f in frames} == {ds.SOPInstanceUID}
    for i, frame in enumerate(frames):
        expected = stored_frames[i].astype(np.float64) * SLOPES[i] + INTERCEPTS[i]  # independent arithmetic
        np.testing.assert_array_equal(frame.values, expected.astype(np.float32))
        frame_ds = Dataset()  # pydicom's modality LUT, fed this frame's values at the top level
        frame_ds.RescaleSlope, frame_ds.RescaleIntercept = SLOPES[i], INTERCEPTS[i]
        np.testing.assert_array_equal(frame.values, apply_modality_lut(ds.pixel_array[i], frame_ds))
        assert frame.pixel_spacing_mm == (0.5 + i, 0.25 + i) and frame.valid.all()


def test_enhanced_ct_shared_rescale(tmp_path, stored_frames):
    path = tmp_path / "shared.dcm"
    enhanced_ct(stored_frames, per_frame=False).save_as(path, enforce_file_format=True)
    for i, frame in enumerate(read_dicom_frames(path)):
        np.testing.assert_array_equal(frame.values, stored_frames[i] * SLOPES[1] + INTERCEPTS[1])


def test_classic_multi_frame_uses_top_level_rescale_and_read_dicom_refuses_it(tmp_path, stored_frames):
    ds = enhanced_ct(stored_frames)
    del ds.PerFrameFunctionalGroupsSequence, ds.SharedFunctionalGroupsSequence
    ds.RescaleSlope, ds.RescaleIntercept, ds.PixelSpacing = 3, -7, [0.7, 0.8]
    path = tmp_path / "classic.dcm"
    ds.save_as(path, enforce_file_format=True)
    frames = read_dicom_frames(path)
    reference = pydicom.dcmread(path)
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.values, apply_modality_lut(reference.pixel_array[i], reference))
        assert frame.pixel_spacing_mm == (0.7, 0.8)
    with pytest.raises(UnreadableImageError, match=r"classic\.dcm: multi-frame DICOM \(3 frames\).*_frames"):
        read_dicom(path)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=lambda uid: uid.name)
def test_multi_frame_lossless_compression_is_identical(tmp_path, stored_frames, syntax):
    plain = tmp_path / "plain.dcm"
    enhanced_ct(stored_frames).save_as(plain, enforce_file_format=True)
    ds = pydicom.dcmread(plain)
    ds.compress(syntax)
    ds.save_as(tmp_path / "compressed.dcm")
    for a, b in zip(read_dicom_frames(plain), read_dicom_frames(tmp_path / "compressed.dcm"), strict=True):
        np.testing.assert_array_equal(a.values, b.values)


@pytest.mark.parametrize("name", GREY_FILES)
def test_single_frame_files_equal_pydicom(name):
    path = pydicom_file(name)
    ds = pydicom.dcmread(path)
    (image,) = read_dicom_frames(path)
    np.testing.assert_array_equal(image.values, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert image.photometric == image.source_photometric == ds.PhotometricInterpretation


@pytest.mark.parametrize("variant", MR_LOSSLESS_VARIANTS)
def test_lossless_variants_identical_through_read_dicom_frames(variant):
    (reference,) = read_dicom_frames(pydicom_file("MR_small.dcm"))
    (image,) = read_dicom_frames(pydicom_file(variant))
    np.testing.assert_array_equal(image.values, reference.values)


def _recoded(tmp_path, name: str, syntax, **options):
    ds = pydicom.dcmread(pydicom_file(name))
    if syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax  # pydicom deflates the dataset when writing
    else:
        ds.compress(syntax, **options)
    path = tmp_path / f"{name}.{syntax.name.split()[0]}.dcm"
    ds.save_as(path)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    return path


@pytest.mark.parametrize("syntax", [DeflatedExplicitVRLittleEndian, RLELossless, JPEG2000Lossless],
                         ids=lambda uid: uid.name)
def test_ct_recoded_losslessly_is_identical(tmp_path, syntax):
    (reference,) = read_dicom_frames(pydicom_file("CT_small.dcm"))
    (image,) = read_dicom_frames(_recoded(tmp_path, "CT_small.dcm", syntax))
    np.testing.assert_array_equal(image.values, reference.values)
    np.testing.assert_array_equal(image.valid, reference.valid)


def test_jpeg2000_lossy_within_one_percent_rms(tmp_path):
    """Tolerance: RMS error ≤ 1 % and max error ≤ 5 % of the image's HU range at compression ratio 10."""
    (reference,) = read_dicom_frames(pydicom_file("CT_small.dcm"))
    (image,) = read_dicom_frames(_recoded(tmp_path, "CT_small.dcm", JPEG2000, j2k_cr=[10]))
    error, span = image.values - reference.values, np.ptp(reference.values)
    assert 0 < np.sqrt(np.mean(error**2)) <= 0.01 * span and np.abs(error).max() <= 0.05 * span


def test_jpeg_baseline_lossy_within_two_grey_levels_rms(tmp_path):
    """8-bit JPEG baseline at quality 90 (Pillow-encoded, encapsulated): RMS ≤ 2 and max ≤ 16 grey levels."""
    ds = pydicom.dcmread(pydicom_file("image_dfl.dcm"))
    original = ds.pixel_array
    stream = io.BytesIO()
    Image.fromarray(original).save(stream, format="JPEG", quality=90)
    ds.PixelData, ds.PatientID = encapsulate([stream.getvalue()]), "PAT-J"
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(tmp_path / "baseline.dcm", enforce_file_format=True)
    (image,) = read_dicom_frames(tmp_path / "baseline.dcm")
    error = image.values - original
    assert 0 < np.sqrt(np.mean(error**2)) <= 2.0 and np.abs(error).max() <= 16


def test_jpeg_ls_near_lossless_within_its_near_bound(tmp_path):
    """JPEG-LS near-lossless (NEAR = 2 in this dcmtk file) vs the RLE-lossless original: |error| ≤ 2."""
    (reference,) = read_dicom_frames(pydicom_file("SC_rgb_rle.dcm"))
    ds = pydicom.dcmread(pydicom_file("SC_rgb_jls_lossy_line.dcm"))
    ds.PatientID = "PAT-L"  # the shipped file has no patient key, which ingest requires
    ds.save_as(tmp_path / "jls.dcm")
    (image,) = read_dicom_frames(tmp_path / "jls.dcm")
    assert np.abs(image.values - reference.values).max() <= 2.0


def test_htj2k_syntax_decodes_or_rejects_clearly(tmp_path):
    """HTJ2K Lossless routed through pydicom's HTJ2K decoder (openjpeg ≥ 2.5 decodes HT code-blocks).

    No HT encoder is installed, so the codestream is a JPEG 2000 Part 1 one (an HTJ2K decoder reads those
    too) relabelled with the HTJ2K transfer syntax: this checks the route, not the HT block decoder.
    """
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.compress(JPEG2000Lossless)
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless
    ds.save_as(tmp_path / "htj2k.dcm")
    (reference,) = read_dicom_frames(pydicom_file("CT_small.dcm"))
    if get_openjpeg_version() >= (2, 5, 0):  # the installed plugin has an HT decoder: it must decode
        (image,) = read_dicom_frames(tmp_path / "htj2k.dcm")
        np.testing.assert_array_equal(image.values, reference.values)
        return
    with pytest.raises(UnreadableImageError) as error:
        read_dicom_frames(tmp_path / "htj2k.dcm")
    assert str(error.value).startswith(f"{tmp_path / 'htj2k.dcm'}: cannot decode pixel data (High-Throughput")


def test_undecodable_syntaxes_are_one_line_rejections(tmp_path):
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.save_as(tmp_path / "video.dcm")
    cases = {tmp_path / "video.dcm": "MPEG2", pydicom_file("JPEG-lossy.dcm"): "JPEG Extended",
             pydicom_file("JPEG2000-embedded-sequence-delimiter.dcm"): "JPEG 2000",
             pydicom_file("MR_truncated.dcm"): "less than expected"}
    for path, reason in cases.items():
        with pytest.raises(UnreadableImageError) as error:
            read_dicom_frames(path)
        message = str(error.value)
        assert not isinstance(error.value, NotAnImageError)
        assert message.startswith(f"{path}: cannot decode pixel data") and reason in message
        assert "\n" not in message


def test_padding_mask_per_frame(tmp_path, stored_frames):
    stored_frames[1, :4] = -2000
    ds = enhanced_ct(stored_frames)
    ds.PixelPaddingValue = -2000
    ds.save_as(tmp_path / "padded.dcm", enforce_file_format=True)
    for i, frame in enumerate(read_dicom_frames(tmp_path / "padded.dcm")):
        np.testing.assert_array_equal(frame.valid, stored_frames[i] != -2000)
