"""DICOM reader against pydicom's own pixel pipeline (modality LUT, VOI window) on pydicom's test files."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from pipeline.io import UnreadableImageError
from pipeline.io.dicom import HUWindow, is_dicom_file, percentile_window, read_dicom, window_stack
from tests.fixtures.dicom_files import MR_LOSSLESS_VARIANTS, pydicom_file, write_ct
from tests.fixtures import paths

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REALDATA = paths.REALDATA / "torchxrayvision_cxr_samples"
CXR = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
CT_WINDOWS = [HUWindow(40, 400), HUWindow(-600, 1500), HUWindow(400, 1800), HUWindow(40, 80),
              HUWindow(1100, 1)]


def pydicom_window_01(ds: Dataset, values: np.ndarray, window: HUWindow) -> np.ndarray:
    """pydicom's VOI LUT with this window, output range rescaled to [0, 1] (range found with sentinels)."""
    voi = copy.deepcopy(ds)
    for keyword in ("VOILUTSequence", "VOILUTFunction"):
        if keyword in voi:
            delattr(voi, keyword)
    voi.WindowCenter, voi.WindowWidth = window.center, window.width
    low, high = apply_voi_lut(np.array([-1e12, 1e12]), voi)
    return (apply_voi_lut(values.astype(np.float64), voi) - low) / (high - low)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "6154"])
def test_values_equal_pydicom_modality_lut(name):
    path = pydicom_file(name)
    ds = pydicom.dcmread(path)
    image = read_dicom(path)
    expected = apply_modality_lut(ds.pixel_array, ds)
    assert image.values.dtype == np.float32 and image.values.shape == expected.shape
    np.testing.assert_array_equal(image.values, expected.astype(np.float32))
    assert image.valid.dtype == bool and image.valid.shape == expected.shape
    assert image.modality == ds.Modality and image.photometric == ds.PhotometricInterpretation
    assert image.patient_key == ds.PatientID and image.study_key == ds.StudyInstanceUID
    assert image.sop_instance_uid == ds.SOPInstanceUID and image.frame_index == 0
    assert image.source_photometric == ds.PhotometricInterpretation


def test_ct_metadata_and_hu_units():
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    image = read_dicom(path)
    assert image.pixel_spacing_mm == pytest.approx(tuple(float(v) for v in ds.PixelSpacing))
    stored = ds.pixel_array.astype(np.float64)
    np.testing.assert_allclose(image.values, stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    assert image.valid.all()  # CT_small declares PixelPaddingValue -2000, which no pixel holds


@pytest.mark.parametrize("variant", MR_LOSSLESS_VARIANTS)
def test_lossless_transfer_syntaxes_decode_identically(variant):
    reference = read_dicom(pydicom_file("MR_small.dcm"))
    image = read_dicom(pydicom_file(variant))
    np.testing.assert_array_equal(image.values, reference.values)
    np.testing.assert_array_equal(image.valid, reference.valid)


@pytest.mark.parametrize("window", CT_WINDOWS, ids=lambda w: f"c{w.center:g}_w{w.width:g}")
def test_window_stack_matches_pydicom_voi_lut(window):
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds)
    out = window_stack(read_dicom(path).values, [window])
    assert out.shape == (1, *values.shape) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], pydicom_window_01(ds, values, window), atol=1e-5, rtol=0)


def test_window_stack_stacks_channels_in_order_and_spans_range():
    image = read_dicom(pydicom_file("CT_small.dcm"))
    out = window_stack(image.values, CT_WINDOWS[:3])
    assert out.shape == (3, *image.values.shape)
    assert out.min() >= 0.0 and out.max() <= 1.0
    for channel, window in enumerate(CT_WINDOWS[:3]):
        np.testing.assert_array_equal(out[channel], window_stack(image.values, [window])[0])
    ramp = np.arange(-2000, 2000, dtype=np.float32)[None, :]
    soft = window_stack(ramp, [HUWindow(40, 400)])[0, 0]
    assert soft[ramp[0] <= -160.5].max() == 0.0 and soft[ramp[0] > 238.5].min() == 1.0  # c-0.5 ± (w-1)/2


def test_monochrome1_values_kept_and_window_inverted():
    path = pydicom_file("6154")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    image = read_dicom(path)
    assert image.needs_inversion
    values = apply_modality_lut(ds.pixel_array, ds)
    window = HUWindow(float(ds.WindowCenter), float(ds.WindowWidth))
    out = window_stack(image.values, [window], invert=image.needs_inversion)
    np.testing.assert_allclose(out[0], 1.0 - pydicom_window_01(ds, values, window), atol=1e-5, rtol=0)
    assert image.pixel_spacing_mm == pytest.approx((0.1, 0.1))  # ImagerPixelSpacing of a CR


def test_pixel_padding_value_masks_stored_values(tmp_path):
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 2000, size=(32, 40)).astype(np.int16)
    stored[:, :5] = -2000
    stored[3, 30] = -2000
    path = write_ct(tmp_path / "padded.dcm", stored, PixelPaddingValue=-2000)
    image = read_dicom(path)
    np.testing.assert_array_equal(image.valid, stored != -2000)
    np.testing.assert_array_equal(image.values, stored.astype(np.float32) - 1024)


def test_pixel_padding_range_limit(tmp_path):
    stored = np.arange(-2100, -2100 + 30 * 30).astype(np.int16).reshape(30, 30)
    path = write_ct(tmp_path / "range.dcm", stored, PixelPaddingValue=-1500, PixelPaddingRangeLimit=-2000)
    image = read_dicom(path)
    np.testing.assert_array_equal(image.valid, (stored < -2000) | (stored > -1500))


def test_patient_key_falls_back_to_name_then_study_then_series_then_the_file(tmp_path):
    stored = np.zeros((4, 4), dtype=np.int16)
    by_name = read_dicom(write_ct(tmp_path / "a.dcm", stored, PatientID=None, PatientName="Doe^Jane"))
    assert (by_name.patient_key, by_name.group_by) == ("Doe^Jane", "patient")
    by_study = read_dicom(write_ct(tmp_path / "b.dcm", stored, PatientID="", StudyInstanceUID="1.2.3.4"))
    assert (by_study.patient_key, by_study.group_by) == ("1.2.3.4", "study") and by_study.study_key == "1.2.3.4"
    by_series = read_dicom(write_ct(tmp_path / "c.dcm", stored, PatientID=None, StudyInstanceUID=None,
                                    SeriesInstanceUID="1.2.3.5"))
    assert (by_series.patient_key, by_series.group_by, by_series.series_key) == ("1.2.3.5", "series", "1.2.3.5")
    alone = read_dicom(write_ct(tmp_path / "d.dcm", stored, PatientID=None, StudyInstanceUID=None))
    assert (alone.patient_key, alone.group_by) == ("", "file")  # ingest groups it by its own path


def test_not_dicom_raises_naming_file(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("this is not a DICOM file\n" * 20)
    with pytest.raises(UnreadableImageError, match="notes.dcm"):
        read_dicom(path)
    with pytest.raises(UnreadableImageError, match="missing.dcm"):
        read_dicom(tmp_path / "missing.dcm")


def test_truncated_dicom_raises_naming_file(tmp_path):
    data = pydicom_file("CT_small.dcm").read_bytes()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImageError, match="truncated.dcm"):
        read_dicom(path)


@pytest.mark.parametrize(("name", "reason"), [("SC_rgb_rle.dcm", "photometric interpretation RGB"),
                                              ("rtdose.dcm", "multi-frame")])
def test_unsupported_images_raise(name, reason):
    with pytest.raises(UnreadableImageError, match=reason):
        read_dicom(pydicom_file(name))


def test_is_dicom_file_uses_preamble_not_extension(tmp_path):
    no_extension = tmp_path / "IM0001"
    shutil.copy(pydicom_file("CT_small.dcm"), no_extension)
    text = tmp_path / "fake.dcm"
    text.write_text("DICOM? no. " * 40)
    assert is_dicom_file(no_extension)
    assert read_dicom(no_extension).modality == "CT"
    assert not is_dicom_file(text) and not is_dicom_file(tmp_path) and not is_dicom_file(tmp_path / "none")


def test_hu_window_rejects_width_below_one():
    with pytest.raises(ValueError, match="width"):
        HUWindow(40, 0.5)


def test_percentile_window_ignores_padding_and_clips():
    rng = np.random.default_rng(1)
    values = rng.normal(100.0, 20.0, size=(200, 200)).astype(np.float32)
    valid = np.ones(values.shape, dtype=bool)
    valid[:, :50] = False
    values[~valid] = -30000.0  # padding must not stretch the window
    out = percentile_window(values, valid, low=1.0, high=99.0)
    assert out.shape == (1, 200, 200) and out.dtype == np.float32
    inside = out[0][valid]
    assert np.mean(inside == 0.0) == pytest.approx(0.01, abs=0.002)
    assert np.mean(inside == 1.0) == pytest.approx(0.01, abs=0.002)
    sorted_valid = np.sort(values[valid])  # independent reference: linear between order statistics
    last = sorted_valid.size - 1
    lo, hi = sorted_valid[int(0.01 * last)], sorted_valid[int(0.99 * last)]
    middle = (values > lo + 1) & (values < hi - 1) & valid
    np.testing.assert_allclose(out[0][middle], (values[middle] - lo) / (hi - lo), atol=2e-3)
    np.testing.assert_array_equal(percentile_window(values, valid, 1.0, 99.0, invert=True), 1.0 - out)
    assert not percentile_window(values, np.zeros_like(valid)).any()


@pytest.fixture
def cxr_pair():
    if not (REALDATA / CXR).exists() or not (REALDATA / "Fake_MONOHR1.dcm").exists():
        pytest.skip(f"real chest X-ray DICOMs not present under {REALDATA}")
    return REALDATA / CXR, REALDATA / "Fake_MONOHR1.dcm"


def test_real_jpeg_chest_xray(cxr_pair):
    path, _ = cxr_pair
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    image = read_dicom(path)
    np.testing.assert_array_equal(image.values, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert image.values.shape == (1024, 1024) and image.photometric == "MONOCHROME2"
    assert image.pixel_spacing_mm == pytest.approx((0.168, 0.168))


def test_real_monochrome1_twin_displays_inverted(cxr_pair):
    original, twin = (read_dicom(p) for p in cxr_pair)
    assert twin.photometric == "MONOCHROME1" and twin.needs_inversion and not original.needs_inversion
    np.testing.assert_array_equal(twin.values, original.values)  # read_dicom never inverts
    shown = percentile_window(original.values, original.valid, invert=original.needs_inversion)
    shown_twin = percentile_window(twin.values, twin.valid, invert=twin.needs_inversion)
    np.testing.assert_allclose(shown_twin, 1.0 - shown, atol=1e-6)
    window = [HUWindow(128, 200)]
    np.testing.assert_allclose(window_stack(twin.values, window, invert=True),
                               1.0 - window_stack(original.values, window), atol=1e-6)
