"""The demo generators write real, readable, deterministic DICOM / GeoTIFF files with consistent labels."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import rasterio
from pydicom.pixels import apply_modality_lut
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from pipeline.demo.medical import IMAGE_CLASSES, MedicalDemoSpec, write_medical_demo
from pipeline.data.chips import MASK_IGNORE
from pipeline.demo.remote import LAND_COVER, RemoteDemoSpec, write_remote_demo

MEDICAL = MedicalDemoSpec(patients=3, slices_per_patient=3, image_size=64)
REMOTE = RemoteDemoSpec(scenes=1, scene_size=256)
LIVER, BONE, LESION = 2, 4, 5


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def medical(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("medical")
    write_medical_demo(out, MEDICAL, seed=0)
    return out


@pytest.fixture(scope="module")
def remote(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("remote")
    write_remote_demo(out, REMOTE, seed=0)
    return out


def _labels(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def _slice(root: Path, relative: str) -> tuple[pydicom.Dataset, np.ndarray, np.ndarray]:
    ds = pydicom.dcmread(root / relative)
    mask = cv2.imread(str(root / "masks" / Path(relative).with_suffix(".png")), cv2.IMREAD_UNCHANGED)
    return ds, apply_modality_lut(ds.pixel_array, ds), mask


# --- medical ---------------------------------------------------------------------------------------


def test_dicom_is_ct_image_storage_with_hu_encoding(medical):
    rows = _labels(medical)
    assert len(rows) == MEDICAL.patients * MEDICAL.slices_per_patient
    for row in rows:
        ds = pydicom.dcmread(medical / row["path"])
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == CTImageStorage == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.Modality == "CT" and ds.PhotometricInterpretation == "MONOCHROME2"
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 1)
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (40.0, 400.0)
        assert ds.pixel_array.dtype == np.int16 and ds.pixel_array.shape == (MEDICAL.image_size,) * 2
        assert [float(v) for v in ds.PixelSpacing] == [MEDICAL.pixel_spacing_mm] * 2
        assert float(ds.SliceThickness) > 0
        assert str(ds.PatientName).startswith("DEMO^PATIENT")
        for keyword in ("PatientID", "PatientBirthDate", "AccessionNumber", "StudyInstanceUID",
                        "SeriesInstanceUID", "SOPInstanceUID"):
            assert str(ds.data_element(keyword).value)


def test_slice_geometry_and_uids_are_consistent_within_a_patient(medical):
    by_study: dict[str, list[pydicom.Dataset]] = {}
    for row in _labels(medical):
        ds = pydicom.dcmread(medical / row["path"])
        by_study.setdefault(ds.StudyInstanceUID, []).append(ds)
    assert len(by_study) == MEDICAL.patients
    sop_uids = set()
    for slices in by_study.values():
        assert len({ds.PatientID for ds in slices}) == 1 and len({ds.SeriesInstanceUID for ds in slices}) == 1
        slices.sort(key=lambda ds: int(ds.InstanceNumber))
        assert [int(ds.InstanceNumber) for ds in slices] == list(range(1, MEDICAL.slices_per_patient + 1))
        z = np.array([float(ds.ImagePositionPatient[2]) for ds in slices])
        assert np.allclose(np.diff(z), z[1] - z[0]) and z[1] != z[0]
        assert np.allclose(z, [float(ds.SliceLocation) for ds in slices])
        sop_uids |= {ds.SOPInstanceUID for ds in slices}
    assert len(sop_uids) == MEDICAL.patients * MEDICAL.slices_per_patient


def test_hu_matches_tissue_in_the_mask(medical):
    slices_with_liver = 0
    for row in _labels(medical):
        ds, hu, mask = _slice(medical, row["path"])
        assert mask.shape == hu.shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= set(range(6))
        corners = np.concatenate([hu[:3, :3].ravel(), hu[:3, -3:].ravel(), hu[-3:, :3].ravel()])
        assert abs(np.median(corners) + 1000) < 60  # air
        liver = hu[(mask == LIVER) & (cv2.erode(mask, np.ones((3, 3))) == LIVER)]
        if liver.size > 20:  # a large lesion may cover most of a small liver section
            slices_with_liver += 1
            assert 35 < np.median(liver) < 100
        assert np.median(hu[mask == BONE]) > 200
        assert hu.min() >= -1024 and hu.max() < 3072
    assert slices_with_liver >= len(_labels(medical)) // 2


def test_labels_are_balanced_and_lesions_only_in_lesion_slices(medical):
    rows = _labels(medical)
    counts = {name: sum(row["label"] == name for row in rows) for name in IMAGE_CLASSES}
    assert set(counts.values()) == {MEDICAL.patients * MEDICAL.slices_per_patient // len(IMAGE_CLASSES)}
    for row in rows:
        assert (medical / row["path"]).is_file()
        _, _, mask = _slice(medical, row["path"])
        assert (mask == LESION).any() == (row["label"] != "normal")
    classes = json.loads((medical / "classes.json").read_text())
    assert classes["image_classes"] == list(IMAGE_CLASSES) and classes["mask_classes"]["5"] == "lesion"


def test_coco_boxes_enclose_the_lesions(medical):
    coco = json.loads((medical / "boxes.json").read_text())
    labels = {row["path"]: row["label"] for row in _labels(medical)}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert set(names.values()) == {"cyst", "tumour"}
    assert {image["file_name"] for image in coco["images"]} == set(labels)
    images = {image["id"]: image for image in coco["images"]}
    covered: dict[str, np.ndarray] = {}
    for box in coco["annotations"]:
        image = images[box["image_id"]]
        x, y, w, h = box["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0
        assert x + w <= image["width"] and y + h <= image["height"]
        assert names[box["category_id"]] == labels[image["file_name"]]
        _, _, mask = _slice(medical, image["file_name"])
        inside = mask[y:y + h, x:x + w] == LESION
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()  # tight
        covered.setdefault(image["file_name"], np.zeros_like(mask, bool))[y:y + h, x:x + w] = True
    for path, label in labels.items():
        _, _, mask = _slice(medical, path)
        if label != "normal":
            assert covered[path][mask == LESION].all()


def test_paths_and_side_files_carry_no_phi(medical):
    phi = set()
    for row in _labels(medical):
        ds = pydicom.dcmread(medical / row["path"])
        phi |= {str(ds.PatientName), ds.PatientID, ds.AccessionNumber, ds.PatientBirthDate}
    side = "".join((medical / name).read_text() for name in ("labels.csv", "classes.json", "boxes.json"))
    paths = " ".join(p.relative_to(medical).as_posix() for p in medical.rglob("*"))
    for value in phi:
        assert value not in side and value not in paths


def test_medical_is_deterministic_per_seed(medical, tmp_path):
    write_medical_demo(tmp_path / "same", MEDICAL, seed=0)
    write_medical_demo(tmp_path / "other", MEDICAL, seed=1)
    reference = _files(medical)
    assert _files(tmp_path / "same") == reference
    other = _files(tmp_path / "other")
    assert other.keys() != reference.keys() or any(other[k] != reference[k] for k in reference)
    first = _labels(medical)[0]["path"]
    assert not np.array_equal(_slice(medical, first)[1], _slice(tmp_path / "other", first)[1])


# --- remote ----------------------------------------------------------------------------------------


def test_geotiff_is_scaled_uint16_on_a_projected_tiled_grid(remote):
    with rasterio.open(remote / "scenes" / "scene_01.tif") as src:
        assert src.count == len(REMOTE.band_names) and src.shape == (REMOTE.scene_size,) * 2
        assert set(src.dtypes) == {"uint16"} and src.nodata == 0
        assert src.scales == (1e-4,) * src.count and src.offsets == (0.0,) * src.count
        assert src.descriptions == REMOTE.band_names
        assert src.crs.is_projected and src.crs.to_epsg() == 32633
        assert src.transform.a == REMOTE.pixel_size_m and src.transform.e == -REMOTE.pixel_size_m
        assert src.transform.b == src.transform.d == 0  # north-up
        assert src.block_shapes[0] == (256, 256) and src.compression.name == "deflate"
        data = src.read()
        valid = src.dataset_mask() > 0
    assert np.array_equal(valid, (data > 0).all(0))  # nodata is all bands at once
    assert 0.5 < valid.mean() < 0.995  # a swath edge cuts a border
    reflectance = data[:, valid] * 1e-4
    assert 0.0 < reflectance.min() and np.percentile(reflectance, 99) < 0.6


def test_mask_shares_the_scene_grid_and_nodata(remote):
    with rasterio.open(remote / "scenes" / "scene_01.tif") as scene, \
            rasterio.open(remote / "masks" / "scene_01.tif") as mask_src:
        assert (mask_src.crs, mask_src.transform, mask_src.shape) == (scene.crs, scene.transform, scene.shape)
        assert mask_src.dtypes == ("uint8",) and mask_src.nodata == MASK_IGNORE
        mask, valid = mask_src.read(1), scene.dataset_mask() > 0
        nir = scene.read(REMOTE.band_names.index("nir") + 1).astype(float)
    assert np.array_equal(mask == MASK_IGNORE, ~valid)
    assert set(np.unique(mask[valid])) <= set(range(len(LAND_COVER)))
    water = mask == LAND_COVER.index("water")
    land = valid & ~water
    if water.any():
        assert nir[water].mean() < 0.5 * nir[land].mean()  # water absorbs near infrared
    classes = json.loads((remote / "classes.json").read_text())
    assert classes["image_classes"] == list(LAND_COVER) and classes["band_names"] == list(REMOTE.band_names)
    assert not (remote / "labels.csv").exists()


def test_land_cover_regions_are_larger_than_a_chip(remote):
    with rasterio.open(remote / "masks" / "scene_01.tif") as src:
        mask = src.read(1)
    size, dominant = REMOTE.chip_size, []
    for r in range(0, REMOTE.scene_size, size):
        for c in range(0, REMOTE.scene_size, size):
            chip = mask[r:r + size, c:c + size]
            values = chip[chip != MASK_IGNORE]
            if values.size:
                dominant.append(np.bincount(values).max() / values.size)
    assert np.median(dominant) > 0.6


def test_building_boxes_lie_on_urban_pixels(remote):
    coco = json.loads((remote / "boxes.json").read_text())
    assert coco["images"][0]["file_name"] == "scenes/scene_01.tif"
    with rasterio.open(remote / coco["images"][0]["file_name"].replace("scenes/", "masks/")) as src:
        mask = src.read(1)
    for box in coco["annotations"]:
        x, y, w, h = box["bbox"]
        assert 0 <= x and 0 <= y and x + w <= REMOTE.scene_size and y + h <= REMOTE.scene_size
        footprint = mask[y:y + h, x:x + w]
        urban = footprint == LAND_COVER.index("urban")
        assert (urban | (footprint == MASK_IGNORE)).all() and urban.mean() >= 0.5  # a swath edge may cut it


def test_remote_band_subset_and_unknown_band(tmp_path):
    spec = RemoteDemoSpec(scenes=1, scene_size=128, band_names=("red", "nir"))
    write_remote_demo(tmp_path / "two", spec, seed=3)
    with rasterio.open(tmp_path / "two" / "scenes" / "scene_01.tif") as src:
        assert src.count == 2 and src.descriptions == ("red", "nir")
    with pytest.raises(ValueError, match="thermal"):
        write_remote_demo(tmp_path / "bad", RemoteDemoSpec(band_names=("red", "thermal")), seed=0)


def test_remote_is_deterministic_per_seed(remote, tmp_path):
    write_remote_demo(tmp_path / "same", REMOTE, seed=0)
    write_remote_demo(tmp_path / "other", REMOTE, seed=1)
    reference = _files(remote)
    assert _files(tmp_path / "same") == reference
    other = _files(tmp_path / "other")
    assert other["scenes/scene_01.tif"] != reference["scenes/scene_01.tif"]
    assert other["masks/scene_01.tif"] != reference["masks/scene_01.tif"]
