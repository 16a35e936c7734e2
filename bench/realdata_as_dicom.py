"""Write a real labelled PNG set as the DICOM a hospital would export, into a folder outside the repository.

Public medical benchmarks ship PNGs; a hospital ships DICOM. To check the presets on real pixels as a user
would meet them, this writes each image as a DICOM object of its modality with pydicom (the documented
``Dataset`` + ``FileMetaDataset`` recipe), plus the side files ingest reads:

* ``pneumoniamnist`` (chest X-ray) → CR, MONOCHROME2, 8 bit; ``labels.csv`` (path, label, split).
* ``busi`` (breast ultrasound) and ``hc18`` (fetal head ultrasound) → US, MONOCHROME2, 8 bit; HC18 with a
  Sequence of Ultrasound Regions carrying its pixel size; lesion / head masks as ``masks/<file>.png`` with
  ``classes.json``; BUSI also ``labels.csv``.

Each image gets its own synthetic PatientID (the sets publish none; HC18 keeps one per exam), so the patient split
is per image. Usage::

    python bench/realdata_as_dicom.py /path/to/labelled/busi /tmp/busi_dicom [--limit 40]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, UID

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
US_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
ROOT_UID = "1.2.826.0.1.3680043.10.1399"  # a fixed prefix: the same set always gives the same UIDs


def _uid(*parts: object) -> UID:
    digest = int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:24], 16)
    return UID(f"{ROOT_UID}.{digest}")


def write_dicom(path: Path, grey: np.ndarray, modality: str, patient: str, study: str,
                regions_mm: float | None = None) -> None:
    """One 8-bit greyscale image as a CR or US object."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_STORAGE if modality == "CR" else US_STORAGE
    meta.MediaStorageSOPInstanceUID = _uid("instance", path.as_posix())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = modality, patient, f"ANON^{patient}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid("study", study), _uid("series", study, modality)
    ds.Rows, ds.Columns = grey.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if modality == "CR":
        ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
    if regions_mm is not None:  # one 2D tissue region over the whole frame, pixel size in cm as the standard wants
        region = Dataset()
        region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
        region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = grey.shape[1] - 1, grey.shape[0] - 1
        region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = 3, 3
        region.PhysicalDeltaX = region.PhysicalDeltaY = regions_mm / 10
        ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.PixelData = np.ascontiguousarray(grey, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise SystemExit(f"error: {path}: not a readable image")
    return image


def _limited(rows: list[dict], limit: int | None) -> list[dict]:
    """At most ``limit`` rows per (split, label), in file order: a small set that keeps every class and split."""
    if limit is None:
        return rows
    seen: dict[tuple[str, str], int] = {}
    kept = []
    for row in rows:
        key = (row["split"], row.get("label", ""))
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= limit:
            kept.append(row)
    return kept


def convert_pneumoniamnist(source: Path, out: Path, limit: int | None) -> list[dict]:
    rows = [{"image": r["path"], "split": r["split"], "label": r["class"]}
            for r in csv.DictReader(open(source / "manifest.csv", newline=""))]
    written = []
    for k, row in enumerate(_limited(rows, limit)):
        target = Path(row["image"]).with_suffix(".dcm")
        write_dicom(out / target, _grey(source / row["image"]), "CR", f"PMN{k:05d}", f"PMN{k:05d}")
        written.append({"path": target.as_posix(), "label": row["label"], "split": row["split"]})
    return written


def convert_ultrasound(source: Path, out: Path, limit: int | None, name: str) -> list[dict]:
    table = "split.csv" if name == "busi" else "metadata.csv"
    rows = [{**r, "label": r.get("class", "")} for r in csv.DictReader(open(source / table, newline=""))
            if r.get("status", "kept") == "kept"]
    written = []
    for k, row in enumerate(_limited(rows, limit)):
        target = Path(row["image"]).with_suffix(".dcm")
        exam = Path(row["image"]).stem.split("_")[0] if name == "hc18" else f"{k:05d}"
        pixel_mm = float(row["pixel_size_mm"]) if row.get("pixel_size_mm") else None
        write_dicom(out / target, _grey(source / row["image"]), "US", f"{name.upper()}{exam}", exam, pixel_mm)
        mask = (_grey(source / row["mask"]) > 127).astype(np.uint8)
        (out / "masks" / target.with_suffix(".png")).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / "masks" / target.with_suffix(".png")), mask)
        written.append({"path": target.as_posix(), "label": row["label"], "split": row["split"]})
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a labelled set folder: pneumoniamnist, busi or hc18 (the development sets layout)")
    parser.add_argument("out", type=Path, help="where the DICOM folder is written (outside the repository)")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per split and class")
    args = parser.parse_args()
    name = args.source.resolve().name
    if name == "pneumoniamnist":
        rows = convert_pneumoniamnist(args.source, args.out, args.limit)
        classes = {"image_classes": ["normal", "pneumonia"]}
    elif name in ("busi", "hc18"):
        rows = convert_ultrasound(args.source, args.out, args.limit, name)
        target = "lesion" if name == "busi" else "head"
        classes = {"mask_classes": {"0": "background", "1": target}}
        if name == "busi":
            classes["image_classes"] = ["benign", "malignant", "normal"]
    else:
        raise SystemExit(f"error: {args.source}: no DICOM conversion for set {name!r} (pneumoniamnist, busi, hc18)")
    with open(args.out / "labels.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["path", "label", "split"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)  # unlabelled rows too (HC18): their split is the set's, not an automatic one
    (args.out / "classes.json").write_text(json.dumps(classes, indent=2) + "\n")
    print(f"{len(rows)} {name} images written as DICOM to {args.out}")


if __name__ == "__main__":
    main()
