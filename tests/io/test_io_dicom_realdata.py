"""The DICOM readers on real files in ../shared/realdata (skipped cleanly when that folder is absent).

dcmqi_ct_seg: 3 real CT slices with DICOM SEGs drawn on them, tiny CT volumes as single-frame files *and* as
Legacy Converted Enhanced CT, label-map SEGs, an SR and an RWVM. torchxrayvision_cxr_samples: a JPEG chest
X-ray and a MONOCHROME1 twin made by changing only its PhotometricInterpretation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from pipeline.io import UnreadableImageError
from pipeline.io.dicom import (
    HUWindow, NotAnImageError, is_dicom_file, percentile_window, read_dicom, read_dicom_frames,
    read_segmentation_reference, window_stack,
)
from tests.fixtures.paths import REALDATA, present

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SEGS = REALDATA / "dcmqi_ct_seg" / "segmentations"
CXR = REALDATA / "torchxrayvision_cxr_samples"


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_every_dicom_object_is_read_or_skipped_never_rejected():
    files = [p for p in sorted(present(REALDATA / "dcmqi_ct_seg").rglob("*"))
             if p.is_file() and is_dicom_file(p)]
    outcome = {}
    for path in files:
        try:
            outcome[path.relative_to(REALDATA).as_posix()] = len(read_dicom_frames(path))
        except NotAnImageError as error:
            assert str(error).startswith(f"{path}: ") and str(error).endswith("skipped")
            outcome[path.relative_to(REALDATA).as_posix()] = str(error).split(": ", 1)[1]
    assert len(files) == 21  # 19 .dcm (inventory.csv) + 2 SEGs named label.seg
    assert sum(isinstance(v, int) for v in outcome.values()) == 12  # 9 CT + 2 legacy enhanced + 1 MR slice
    assert outcome["dcmqi_ct_seg/segmentations/24x38x3/multiframe/mf.dcm"] == 3
    sr = "not an image (Comprehensive SR, no pixel data), skipped"
    assert outcome["dcmqi_ct_seg/sr-example/sr.dcm"] == sr
    assert "segmentation object" in outcome["dcmqi_ct_seg/segmentations/24x38x3/seg/label.seg"]


def test_real_ct_slices_in_hu():
    for path in sorted(present(SEGS / "ct-3slice").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        (image,) = read_dicom_frames(path)
        np.testing.assert_array_equal(image.values, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
        assert image.modality == "CT" and image.sop_instance_uid == ds.SOPInstanceUID
        assert image.values.min() < -1000 < 0 < image.values.max()  # air and tissue in HU


def test_seg_references_match_the_ct_slices():
    slices = {sop_uid(p) for p in present(SEGS / "ct-3slice").glob("*.dcm")}
    reference = read_segmentation_reference(SEGS / "liver.dcm")
    assert reference.kind == "SEG" and reference.segment_labels == {1: "Liver"}
    assert set(reference.referenced_sop_instance_uids) == slices and len(slices) == 3
    assert sorted(f.referenced_sop_instance_uid for f in reference.frames) == sorted(slices)
    overlaps = read_segmentation_reference(SEGS / "partial_overlaps.dcm")
    colours = ["DARK_BLUE", "GREEN", "LIGHT_BLUE", "ORANGE", "PURPLE"]
    assert sorted(overlaps.segment_labels.values()) == colours
    assert set(overlaps.referenced_sop_instance_uids) <= slices and len(overlaps.frames) == 7


@pytest.mark.parametrize("volume", ["23x38x3", "24x38x3"])
def test_extensionless_seg_and_label_maps_reference_the_volume(volume):
    images = {sop_uid(p) for p in present(SEGS / volume / "image").glob("*.dcm")}
    seg = SEGS / volume / "seg" / "label.seg"
    assert is_dicom_file(seg)
    with pytest.raises(NotAnImageError, match="segmentation object"):
        read_dicom(seg)
    assert set(read_segmentation_reference(seg).referenced_sop_instance_uids) == images
    if volume == "24x38x3":
        for name in ("sparse-labelmap-noppv.dcm", "sparse-labelmap-ppv5.dcm"):
            label_map = read_segmentation_reference(SEGS / name)
            assert label_map.segment_labels == {0: "Background", 1: "Liver"}
            assert set(label_map.referenced_sop_instance_uids) <= images
            assert {f.segment_number for f in label_map.frames} == {0}


@pytest.mark.parametrize("volume", ["23x38x3", "24x38x3"])
def test_legacy_enhanced_frames_equal_their_source_slices(volume):
    """Each frame of the Legacy Converted Enhanced CT equals the single-frame file it was converted from."""
    sources = {sop_uid(p): p for p in present(SEGS / volume / "image").glob("*.dcm")}
    multiframe = SEGS / volume / "multiframe" / "mf.dcm"
    ds = pydicom.dcmread(multiframe)
    frames = read_dicom_frames(multiframe)
    assert len(frames) == int(ds.NumberOfFrames) == 3
    for frame, item in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        source = sources[item.ConversionSourceAttributesSequence[0].ReferencedSOPInstanceUID]
        original = read_dicom(source)
        np.testing.assert_array_equal(frame.values, original.values)
        assert frame.pixel_spacing_mm == original.pixel_spacing_mm == (0.7, 0.7)
    with pytest.raises(UnreadableImageError, match="multi-frame DICOM"):
        read_dicom(multiframe)


def test_monochrome1_twin_displays_as_the_inverse_of_the_original():
    """The twin has the original's stored values with PhotometricInterpretation MONOCHROME1, so once windowed
    and inverted (as MONOCHROME1 requires) it shows the original's negative: 1 − original display."""
    present(CXR)
    (original,) = read_dicom_frames(CXR / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
    (twin,) = read_dicom_frames(CXR / "Fake_MONOHR1.dcm")
    assert twin.needs_inversion and not original.needs_inversion
    np.testing.assert_array_equal(twin.values, original.values)
    window = [HUWindow(128, 256)]
    np.testing.assert_allclose(window_stack(twin.values, window, invert=twin.needs_inversion),
                               1.0 - window_stack(original.values, window), atol=1e-6)
    shown = percentile_window(twin.values, twin.valid, invert=twin.needs_inversion)
    np.testing.assert_allclose(1.0 - shown, percentile_window(original.values, original.valid), atol=1e-6)
