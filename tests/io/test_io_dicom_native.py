"""Ingest's shortcuts around pydicom's per-call overhead give pydicom's own results, bit for bit.

* :func:`native_frames` (uncompressed little-endian greyscale) against ``Dataset.pixel_array``;
* :func:`integer_shift` (slope 1, integer intercept) against ``apply_modality_lut``;
* :func:`media_storage_sop_class` against ``read_file_meta_info``;
on pydicom's shipped test files and on generated files with the awkward cases (unused high bits holding
garbage, signed 12-bit, 8-bit, multi-frame, short Pixel Data).
"""

from __future__ import annotations


import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from pipeline.ingest.sources import resize_chip
from pipeline.io.dicom import read_dicom_frames
from pipeline.io.dicom_files import media_storage_sop_class
from pipeline.io.dicom_pixels import integer_shift, native_frames
from tests.fixtures.dicom_files import read_or_none, shipped_pydicom_files, write_ct

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _syntax(ds: Dataset):
    return getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)


def test_native_frames_equal_pixel_array_on_every_shipped_file():
    compared = 0
    for path in shipped_pydicom_files():
        ds = read_or_none(path)
        if ds is None or "PixelData" not in ds:
            continue
        frames = native_frames(ds, _syntax(ds))
        if frames is None:
            continue
        frames, expected = np.stack(list(frames)), ds.pixel_array
        np.testing.assert_array_equal(frames, expected.reshape(frames.shape), err_msg=path.name)
        assert frames.dtype == expected.dtype, path.name
        compared += 1
    assert compared >= 4  # CT_small, MR_small, the implicit VR and padded variants …


@pytest.mark.parametrize(("allocated", "stored_bits", "signed"), [(16, 12, 1), (16, 12, 0), (16, 16, 1),
                                                                   (8, 8, 0), (8, 6, 1), (16, 10, 0)])
def test_unused_high_bits_are_handled_like_pydicom(tmp_path, allocated, stored_bits, signed):
    """Garbage in the unused high bits (overlays of old scanners) is cleared / sign-extended as pydicom does."""
    rng = np.random.default_rng(stored_bits + allocated + signed)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    raw = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=(3, 24, 20), endpoint=True).astype(dtype)
    path = write_ct(tmp_path / "f.dcm", raw[0], NumberOfFrames=3, BitsAllocated=allocated, BitsStored=stored_bits,
                    HighBit=stored_bits - 1, PixelRepresentation=signed)
    ds = pydicom.dcmread(path)
    ds.PixelData = raw.tobytes()  # write_ct stores int16: replace with the raw bytes of every frame
    frames = native_frames(ds, _syntax(ds))
    assert frames is not None
    frames = np.stack(list(frames))
    np.testing.assert_array_equal(frames, ds.pixel_array)
    assert frames.dtype == ds.pixel_array.dtype


def test_other_encodings_are_left_to_pydicom(tmp_path):
    stored = np.arange(-50, 50, dtype=np.int16).reshape(10, 10)
    ds = pydicom.dcmread(write_ct(tmp_path / "a.dcm", stored))
    assert native_frames(ds, ExplicitVRBigEndian) is None
    assert native_frames(ds, _syntax(ds)) is not None and native_frames(ds, ImplicitVRLittleEndian) is not None
    ds.PixelData = ds.PixelData[:-10]  # short: pydicom reports it
    assert native_frames(ds, _syntax(ds)) is None
    for keyword, value in (("BitsAllocated", 32), ("PhotometricInterpretation", "RGB"), ("SamplesPerPixel", 3)):
        changed = pydicom.dcmread(tmp_path / "a.dcm")
        setattr(changed, keyword, value)
        assert native_frames(changed, _syntax(changed)) is None, keyword


@pytest.mark.parametrize(("slope", "intercept", "fast"), [(1, -1024, True), (1, 0, True), (1.0, 8388608, True),
                                                          (1, -1024.5, False), (0.5, -1024, False),
                                                          (2, 0, False), (1, 1e10, False)])
def test_integer_shift_is_exactly_pydicom_modality_lut(tmp_path, slope, intercept, fast):
    stored = np.array([[-32768, -1, 0], [1, 1234, 32767]], dtype=np.int16)
    ds = pydicom.dcmread(write_ct(tmp_path / "r.dcm", stored, RescaleSlope=slope, RescaleIntercept=intercept))
    assert (integer_shift(ds, stored.dtype) is not None) == fast
    image = read_dicom_frames(tmp_path / "r.dcm")[0]
    np.testing.assert_array_equal(image.values, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))


def test_integer_shift_without_rescale_or_with_half_of_it(tmp_path):
    """pydicom rescales only when both RescaleSlope and RescaleIntercept are present."""
    stored = np.array([[-5, 7]], dtype=np.int16)
    both = {"RescaleSlope": None, "RescaleIntercept": None}
    for missing in ({"RescaleSlope": None}, {"RescaleIntercept": None}, both):
        ds = pydicom.dcmread(write_ct(tmp_path / "m.dcm", stored, **missing))
        assert integer_shift(ds, stored.dtype) == 0
        np.testing.assert_array_equal(read_dicom_frames(tmp_path / "m.dcm")[0].values, [[-5.0, 7.0]])


def test_media_storage_sop_class_equals_pydicom_meta_reader(tmp_path):
    compared = 0
    for path in shipped_pydicom_files():
        try:
            expected = str(read_file_meta_info(path).get("MediaStorageSOPClassUID", "") or "")
        except Exception:  # no meta group or a damaged one
            continue
        with open(path, "rb") as stream:
            is_part10 = stream.read(132)[128:] == b"DICM"
        if not is_part10:
            continue
        assert media_storage_sop_class(path) == expected, path.name
        compared += 1
    assert compared >= 40
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    assert media_storage_sop_class(text) == "" and media_storage_sop_class(tmp_path / "missing") == ""


def test_media_storage_sop_class_falls_back_on_an_unusual_meta_group(tmp_path):
    """A meta group whose elements are not plain explicit VR (here: a corrupted VR) goes to pydicom."""
    path = write_ct(tmp_path / "odd.dcm", np.zeros((4, 4), np.int16))
    data = bytearray(path.read_bytes())
    data[136:138] = b"??"  # VR of (0002,0000)
    path.write_bytes(bytes(data))
    try:
        expected = str(read_file_meta_info(path).get("MediaStorageSOPClassUID", "") or "")
    except Exception:
        expected = ""
    assert media_storage_sop_class(path) == expected


def test_resize_chip_valid_mask_with_and_without_padding():
    channels = np.random.default_rng(0).normal(size=(1, 32, 32)).astype(np.float32)
    values, valid = resize_chip(channels, np.ones((32, 32), bool), 8)
    assert valid.all() and valid.shape == (8, 8) and values.shape == (1, 8, 8)
    np.testing.assert_allclose(values[0], channels[0].reshape(8, 4, 8, 4).mean(axis=(1, 3)), atol=1e-6)
    partial = np.ones((32, 32), bool)
    partial[:, :16] = False
    mask = resize_chip(channels, partial, 8)[1]
    assert not mask[:, :4].any() and mask[:, 4:].all()
