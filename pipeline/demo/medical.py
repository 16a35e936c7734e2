"""The medical demo written as a hospital exports it: real DICOM CT slices (one folder per patient, synthetic PHI
in the tags only), ``labels.csv``, ``masks/`` and a COCO ``boxes.json`` of the lesions. The anatomy itself is
drawn by :mod:`pipeline.demo.ct_phantom`; one seed always gives byte-identical files.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pipeline.demo.ct_phantom import (IMAGE_CLASSES, LESION, LESION_CATEGORIES, MASK_CLASSES, RESCALE_INTERCEPT,
                                      WINDOW_CENTER, WINDOW_WIDTH, MedicalDemoSpec, draw_patient, render_slice)

log = logging.getLogger(__name__)

__all__ = ["IMAGE_CLASSES", "LESION", "MASK_CLASSES", "MedicalDemoSpec", "write_medical_demo"]


CT_TAGS = {  # identical in every slice: modality, pixel encoding (stored = HU + 1024), display window
    "Modality": "CT", "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "Manufacturer": "SYNTHETIC",
    "BodyPartExamined": "ABDOMEN", "PatientPosition": "HFS", "StudyID": "1", "SeriesNumber": 1,
    "ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "SamplesPerPixel": 1,
    "PhotometricInterpretation": "MONOCHROME2",
    "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 1,
    "RescaleIntercept": RESCALE_INTERCEPT, "RescaleSlope": 1, "RescaleType": "HU",
    "WindowCenter": WINDOW_CENTER, "WindowWidth": WINDOW_WIDTH,
}


def _uid(seed: int, *parts: object) -> str:
    """A UID hashed from the seed and ``parts``: stable across runs, unique across objects."""
    return generate_uid(entropy_srcs=["ssl-domain-transfer/demo-medical", str(seed), *map(str, parts)])


def _draw_identity(rng: np.random.Generator, seed: int, index: int) -> dict[str, str]:
    """Synthetic PHI and study UIDs of patient ``index`` as DICOM keywords (fixed dates: no wall clock).

    These values go into DICOM tags only, never into paths or side files.
    """
    born = str(np.datetime64("1940-01-01") + rng.integers(0, 60 * 365)).replace("-", "")
    studied = str(np.datetime64("2022-01-01") + rng.integers(0, 3 * 365)).replace("-", "")
    return {"PatientName": f"DEMO^PATIENT{index + 1:04d}", "PatientID": f"DM{rng.integers(10**6, 10**7)}",
            "PatientBirthDate": born, "PatientSex": str(rng.choice(["F", "M"])), "StudyDate": studied,
            "SeriesDate": studied, "AccessionNumber": f"ACC{rng.integers(10**7, 10**8)}",
            "StudyInstanceUID": _uid(seed, "study", index), "SeriesInstanceUID": _uid(seed, "series", index),
            "FrameOfReferenceUID": _uid(seed, "frame", index)}


def _dicom(hu: np.ndarray, identity: dict, index: int, sop_uid: str, spec: MedicalDemoSpec) -> Dataset:
    """A CT Image Storage dataset (Explicit VR Little Endian) for slice ``index`` of a series."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for keyword, value in {**CT_TAGS, **identity}.items():
        setattr(ds, keyword, value)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.InstanceNumber = CTImageStorage, sop_uid, index + 1
    increment = round(150.0 / max(spec.slices_per_patient - 1, 1), 3)  # the series spans ~15 cm
    spacing = float(spec.pixel_spacing_mm)
    corner = round(-spec.image_size * spacing / 2 + spacing / 2, 3)
    z = round(-index * increment, 3)  # head-first supine: slices step caudally
    ds.ImagePositionPatient, ds.SliceLocation = [corner, corner, z], z
    ds.SliceThickness, ds.PixelSpacing = min(5.0, increment), [spacing, spacing]
    ds.Rows = ds.Columns = hu.shape[0]
    ds.PixelData = (np.rint(hu) - RESCALE_INTERCEPT).astype("<i2").tobytes()
    return ds


def _coco(images: list[dict], lesions: list[list[tuple[str, np.ndarray]]]) -> dict:
    """COCO detection ground truth: one box per lesion, tight around its mask pixels."""
    annotations = []
    for image, found in zip(images, lesions):
        for kind, pixels in found:
            rows, cols = np.nonzero(pixels)
            if rows.size == 0:
                continue
            x, y = int(cols.min()), int(rows.min())
            w, h = int(cols.max()) - x + 1, int(rows.max()) - y + 1
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "bbox": [x, y, w, h],
                                "category_id": LESION_CATEGORIES.index(kind) + 1, "area": int(rows.size),
                                "iscrowd": 0})
    categories = [{"id": i + 1, "name": name, "supercategory": "lesion"}
                  for i, name in enumerate(LESION_CATEGORIES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_medical_demo(out_dir: Path, spec: MedicalDemoSpec, seed: int) -> None:
    """Write the CT demo into ``out_dir``: images/, masks/, labels.csv, classes.json, boxes.json.

    Layout: ``images/subject_<k>/study_1/slice_<j>.dcm`` (``k`` is a shuffled index unrelated to the
    synthetic PatientID / name, so paths carry no PHI), ``masks/<image path>.png`` (uint8 codes of
    :data:`MASK_CLASSES`), ``labels.csv`` (``path,label``, paths relative to ``out_dir``),
    ``boxes.json`` (COCO lesion boxes). Slice classes are balanced over the whole set.
    """
    rng = np.random.default_rng(seed)
    n, total = spec.image_size, spec.patients * spec.slices_per_patient
    kinds = rng.permutation(np.resize(np.arange(len(IMAGE_CLASSES)), total))
    folders = rng.permutation(spec.patients) + 1
    rows, images, lesions = [], [], []
    for patient in range(spec.patients):
        anatomy, identity = draw_patient(rng), _draw_identity(rng, seed, patient)
        for j in range(spec.slices_per_patient):
            kind = IMAGE_CLASSES[kinds[patient * spec.slices_per_patient + j]]
            t = j / (spec.slices_per_patient - 1) if spec.slices_per_patient > 1 else 0.5
            hu, mask, found = render_slice(anatomy, t, kind, n, rng)
            relative = f"images/subject_{folders[patient]:03d}/study_1/slice_{j + 1:03d}.dcm"
            (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            sop_uid = _uid(seed, "instance", patient, j)
            _dicom(hu, identity, j, sop_uid, spec).save_as(out_dir / relative, enforce_file_format=True)
            mask_path = out_dir / "masks" / Path(relative).with_suffix(".png")
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(mask_path), mask)
            rows.append((relative, kind))
            images.append({"id": len(images) + 1, "file_name": relative, "width": n, "height": n})
            lesions.append(found)
    _write_side_files(out_dir, rows, _coco(images, lesions))
    log.info("medical demo: %d slices of %d patients written to %s", total, spec.patients, out_dir)


def _write_side_files(out_dir: Path, rows: list[tuple[str, str]], coco: dict) -> None:
    """labels.csv (sorted by path so listing order never matters), classes.json and boxes.json."""
    with open(out_dir / "labels.csv", "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(sorted(rows))
    classes = {"image_classes": list(IMAGE_CLASSES), "lesion_categories": list(LESION_CATEGORIES),
               "mask_classes": {str(code): name for code, name in MASK_CLASSES.items()}}
    (out_dir / "classes.json").write_text(json.dumps(classes, indent=2) + "\n")
    (out_dir / "boxes.json").write_text(json.dumps(coco) + "\n")
