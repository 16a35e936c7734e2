"""Colour policy: RGB / YBR / palette DICOM → one ITU-R BT.601 luminance channel, against pydicom's tools."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import convert_color_space, pixel_array

from pipeline.io import UnreadableImageError
from pipeline.io.dicom import percentile_window, read_dicom, read_dicom_frames
from tests.fixtures.dicom_files import pydicom_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BT601 = (0.299, 0.587, 0.114)
# One 100×100 test image, the same pixels in every file of a family.
RGB_LOSSLESS = ["SC_rgb_rle.dcm", "SC_rgb_gdcm_KY.dcm", "SC_rgb_jpeg_gdcm.dcm"]  # RLE, J2K, JPEG lossless
RGB_LOSSY = ["SC_rgb_dcmtk_+eb+cr.dcm", "SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_rgb_dcmtk_+eb+cy+n2.dcm",
             "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm", "SC_rgb_dcmtk_+eb+cy+s4.dcm",
             "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_lossy_gdcm.dcm", "SC_ybr_full_422_uncompressed.dcm"]
COLOUR_FILES = ["ExplVR_BigEnd.dcm", "SC_rgb_jpeg.dcm", "SC_rgb_jpeg_app14_dcmd.dcm", "SC_rgb_small_odd.dcm",
                "SC_rgb_small_odd_jpeg.dcm", "SC_rgb_rle_16bit.dcm", "examples_rgb_color.dcm",
                "examples_jpeg2k.dcm", "GDCMJ2K_TextGBR.dcm", *RGB_LOSSLESS, *RGB_LOSSY]


def bt601(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    return BT601[0] * r + BT601[1] * g + BT601[2] * b


@pytest.mark.parametrize("name", COLOUR_FILES)
def test_colour_is_bt601_luminance_of_pydicoms_rgb(name):
    path = pydicom_file(name)
    ds = pydicom.dcmread(path)
    (image,) = read_dicom_frames(path)
    np.testing.assert_allclose(image.values, bt601(ds.pixel_array), rtol=1e-6, atol=1e-3)
    assert image.values.dtype == np.float32 and image.valid.all()
    assert image.photometric == "MONOCHROME2" and not image.needs_inversion
    assert image.source_photometric == ds.PhotometricInterpretation


def test_ybr_full_422_luminance_is_its_y_channel():
    """BT.601 luminance *is* the Y of YBR_FULL: the stored Y plane is an independent reference.

    Within ±1 (RGB rounding) wherever the colour is inside the RGB gamut; pixels whose RGB saturates at 0 or
    255 were clipped by the YCbCr → RGB conversion and may differ by up to 2.
    """
    path = pydicom_file("SC_ybr_full_422_uncompressed.dcm")
    ds = pydicom.dcmread(path)
    raw = pixel_array(ds, raw=True)  # YCbCr as stored, chroma upsampled
    np.testing.assert_array_equal(convert_color_space(raw, "YBR_FULL_422", "RGB"), ds.pixel_array)
    (image,) = read_dicom_frames(path)
    error = np.abs(image.values - raw[..., 0])
    in_gamut = ((ds.pixel_array > 0) & (ds.pixel_array < 255)).all(axis=-1)
    assert in_gamut.any() and error[in_gamut].max() <= 1.0 and error.max() <= 2.0


def test_lossless_colour_family_identical():
    reference = read_dicom_frames(pydicom_file(RGB_LOSSLESS[0]))[0].values
    for name in RGB_LOSSLESS[1:]:
        np.testing.assert_array_equal(read_dicom_frames(pydicom_file(name))[0].values, reference)


@pytest.mark.parametrize("name", RGB_LOSSY)
def test_lossy_colour_within_eight_grey_levels(name):
    """JPEG baseline (RGB and YCbCr, 4:4:4 / 4:2:2) vs the lossless original: max ≤ 8, RMS ≤ 1.5 of 255."""
    reference = read_dicom_frames(pydicom_file(RGB_LOSSLESS[0]))[0].values
    error = read_dicom_frames(pydicom_file(name))[0].values - reference
    assert np.abs(error).max() <= 8.0 and np.sqrt(np.mean(error**2)) <= 1.5


def test_palette_colour_against_its_lookup_tables():
    """PALETTE COLOR: each stored index looked up in the Red/Green/Blue LUT data by hand, then BT.601."""
    path = pydicom_file("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    count, first, bits = ds.RedPaletteColorLookupTableDescriptor
    luts = [np.frombuffer(ds[f"{c}PaletteColorLookupTableData"].value, dtype=f"<u{bits // 8}")
            for c in ("Red", "Green", "Blue")]
    index = np.clip(ds.pixel_array.astype(np.int64) - first, 0, (count or 65536) - 1)
    expected = bt601(np.stack([lut[index] for lut in luts], axis=-1))
    (image,) = read_dicom_frames(path)
    np.testing.assert_allclose(image.values, expected, rtol=1e-6, atol=1e-2)
    assert image.source_photometric == "PALETTE COLOR" and image.photometric == "MONOCHROME2"


@pytest.mark.parametrize(("name", "frames"), [("SC_rgb_rle_2frame.dcm", 2), ("examples_ybr_color.dcm", 30)])
def test_multi_frame_colour_one_image_per_frame(name, frames):
    path = pydicom_file(name)
    rgb = pydicom.dcmread(path).pixel_array
    images = read_dicom_frames(path)
    assert len(images) == frames and [image.frame_index for image in images] == list(range(frames))
    for image, expected in zip(images, rgb, strict=True):
        np.testing.assert_allclose(image.values, bt601(expected), rtol=1e-6, atol=1e-3)


def test_colour_windows_like_any_uncalibrated_image():
    (image,) = read_dicom_frames(pydicom_file("examples_rgb_color.dcm"))
    shown = percentile_window(image.values, image.valid, invert=image.needs_inversion)
    assert shown.shape == (1, 240, 320) and shown.min() == 0.0 and shown.max() == 1.0


def test_read_dicom_stays_greyscale_only():
    with pytest.raises(UnreadableImageError, match="interpretation YBR_FULL_422.*read_dicom_frames"):
        read_dicom(pydicom_file("SC_ybr_full_422_uncompressed.dcm"))


def test_unsupported_photometric_is_a_one_line_rejection(tmp_path):
    ds = pydicom.dcmread(pydicom_file("SC_rgb_rle.dcm"))
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.save_as(tmp_path / "partial.dcm")
    with pytest.raises(UnreadableImageError, match=r"partial\.dcm: unsupported photometric interpretation "
                                                   r"YBR_PARTIAL_420 with 3 samples per pixel$"):
        read_dicom_frames(tmp_path / "partial.dcm")
