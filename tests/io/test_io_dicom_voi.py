"""The file's VOI LUT (radiographs) against pydicom's own ``apply_voi_lut``, and the per-frame VOI of enhanced objects."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence

from pipeline.io.dicom_voi import UnusableVOI, apply_file_voi, frame_voi_source
from tests.fixtures.dicom_items import sequence_item
from tests.fixtures.dicom_modalities import radiograph, voi_lut_item, write_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _pydicom_window_01(ds, values, index=0):
    """pydicom's windowing, its output range found with sentinels and mapped to [0, 1]."""
    low, high = apply_voi_lut(np.array([-1e12, 1e12]), ds, index, prefer_lut=False)
    return (apply_voi_lut(values.astype(np.float64), ds, index, prefer_lut=False) - low) / (high - low)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_functions_match_pydicom(tmp_path, function):
    path = write_image(tmp_path / "dx.dcm", radiograph(), "DX", WindowCenter=2400, WindowWidth=1600,
                       VOILUTFunction=function)
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    mapped, text = apply_file_voi(values, ds)
    np.testing.assert_allclose(mapped, _pydicom_window_01(ds, values), atol=1e-6)
    assert text == f"file window 1 of 1 (C 2400 W 1600, {function})"
    assert 0.0 <= mapped.min() < 0.2 and 0.8 < mapped.max() <= 1.0  # a real window, not a blank


def test_voi_lut_sequence_matches_pydicom_over_the_lut_range(tmp_path):
    path = write_image(tmp_path / "cr.dcm", radiograph(), "CR", "MONOCHROME1",
                       VOILUTSequence=Sequence([voi_lut_item(first=1000, entries=3000)]),
                       WindowCenter=2000, WindowWidth=100)  # both present: the LUT wins, as in pydicom
    ds = pydicom.dcmread(path)
    values = ds.pixel_array
    mapped, text = apply_file_voi(values.astype(np.float32), ds)
    lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
    expected = (apply_voi_lut(values, ds).astype(np.float64) - lut.min()) / (lut.max() - lut.min())
    np.testing.assert_allclose(mapped, expected, atol=1e-6)
    assert text == "file VOI LUT 1 of 2"  # not inverted here: MONOCHROME1 is the caller's step
    window, text = apply_file_voi(values.astype(np.float32), ds, number=2)  # the window is alternative 2
    np.testing.assert_allclose(window, _pydicom_window_01(ds, values), atol=1e-6)
    assert text == "file window 2 of 2 (C 2000 W 100, LINEAR)"


def _standard_lookup(values, table, first):
    """PS3.3 C.11.2.1.1 written out: below the first mapped value → entry 0, beyond the last → the last entry."""
    position = np.clip(values.astype(np.int64) - first, 0, len(table) - 1)
    table = table.astype(np.float64)
    return (table[position] - table.min()) / (table.max() - table.min())


def test_an_8_bit_table_of_4096_entries_is_looked_up_as_the_standard_says(tmp_path):
    """pydicom 3.0's apply_voi indexes through an array of the table's output type: uint8 wraps at 256."""
    pixels = radiograph()
    path = write_image(tmp_path / "cr.dcm", pixels, "CR", VOILUTSequence=Sequence([voi_lut_item(0, 4096, bits=8)]))
    ds = pydicom.dcmread(path)
    mapped, _ = apply_file_voi(pixels.astype(np.float32), ds)
    table = np.asarray(ds.VOILUTSequence[0].LUTData)
    np.testing.assert_allclose(mapped, _standard_lookup(pixels, table, 0), atol=1e-6)
    assert np.corrcoef(pixels.ravel(), mapped.ravel())[0, 1] > 0.95


def test_a_signed_first_mapped_value_stored_as_us_is_read_signed(tmp_path):
    pixels = (radiograph().astype(np.int32) - 2048).astype(np.int16)  # signed detector values −2048 … 2047
    item = voi_lut_item(0, 4096)
    item.LUTDescriptor = [4096, 2 ** 16 - 2048, 12]  # −2048 written as US 63488, as many writers do
    path = write_image(tmp_path / "dx.dcm", pixels.view(np.uint16), "DX", PixelRepresentation=1,
                       VOILUTSequence=Sequence([item]))
    ds = pydicom.dcmread(path)
    mapped, _ = apply_file_voi(ds.pixel_array.astype(np.float32), ds)
    np.testing.assert_allclose(mapped, _standard_lookup(pixels, np.asarray(item.LUTData), -2048), atol=1e-6)
    assert mapped.std() > 0.05


def test_a_window_the_standard_forbids_is_refused_with_its_reason(tmp_path):
    ds = pydicom.dcmread(write_image(tmp_path / "dx.dcm", radiograph(), "DX", WindowCenter=2000, WindowWidth=0))
    with pytest.raises(UnusableVOI, match=r"file window 1 of 1 unusable \(Window Width 0 not allowed for LINEAR\)"):
        apply_file_voi(ds.pixel_array.astype(np.float32), ds)


def test_which_of_several_windows_is_used_is_said(tmp_path):
    path = write_image(tmp_path / "dx.dcm", radiograph(), "DX", WindowCenter=[2000, 2600, 3000],
                       WindowWidth=[4000, 800, 500])
    ds = pydicom.dcmread(path)
    values = ds.pixel_array.astype(np.float32)
    second, text = apply_file_voi(values, ds, number=2)
    np.testing.assert_allclose(second, _pydicom_window_01(ds, values, index=1), atol=1e-6)
    assert text == "file window 2 of 3 (C 2600 W 800, LINEAR)"
    first, text = apply_file_voi(values, ds, number=5)
    np.testing.assert_allclose(first, _pydicom_window_01(ds, values, index=0), atol=1e-6)
    assert "window 1 of 3" in text and "voi_number 5 absent" in text


def test_no_voi_in_the_file_gives_none(tmp_path):
    ds = pydicom.dcmread(write_image(tmp_path / "dx.dcm", radiograph(), "DX"))
    assert apply_file_voi(ds.pixel_array.astype(np.float32), ds) is None


def test_shipped_computed_radiograph_window_matches_pydicom():
    path = get_testdata_file("6154")  # pydicom's dicomdirtests CR: MONOCHROME1, 12 bit, WindowCenter/Width
    if path is None:
        pytest.skip("pydicom test file 6154 not shipped")
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    mapped, _ = apply_file_voi(values, ds)
    np.testing.assert_allclose(mapped, _pydicom_window_01(ds, values), atol=1e-6)
    assert mapped.std() > 0.01  # the file's own window: low contrast, but not a blank


def test_enhanced_objects_take_the_frame_voi_functional_group():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    frames = [sequence_item(FrameVOILUTSequence=Sequence([sequence_item(WindowCenter=c, WindowWidth=w)]))
              for c, w in ((40, 400), (-600, 1500))]
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.SharedFunctionalGroupsSequence = Sequence([sequence_item(
        FrameVOILUTSequence=Sequence([sequence_item(WindowCenter=400, WindowWidth=1800)]),
        PixelValueTransformationSequence=Sequence([sequence_item(RescaleSlope=1, RescaleIntercept=-1024)]))])
    second = frame_voi_source(ds, 1)
    assert (float(second.WindowCenter), float(second.WindowWidth)) == (-600.0, 1500.0)
    assert float(second.RescaleIntercept) == -1024.0
    reference = copy.deepcopy(ds)
    reference.WindowCenter, reference.WindowWidth = -600, 1500
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    np.testing.assert_allclose(apply_file_voi(values, ds, index=1)[0], _pydicom_window_01(reference, values),
                               atol=1e-6)
