"""DICOM ingest throughput against the raw decoder, on the same files.

Writes a CT-like DICOM folder with the demo generator (default 60 patients × 20 slices of 512 × 512, a
realistic CT matrix), then measures files per second of
  (raw) ``pydicom.dcmread(path).pixel_array`` for every file, in one process;
  (ingest, N workers) the ingest reader (find by content, decode, modality LUT, padding mask, HU window
      stack, resize to the chip size, pseudonymised grouping key) for N = 1 and 2 worker processes.
Goals (issue: real-world ingestion): ≥ 0.9 × raw on one worker, ≥ 1.7 × raw with two workers.

    python bench/ingest.py [--patients 60] [--slices 20] [--size 512] [--syntax none|rle|jpeg2000]

``--syntax`` re-encodes every file (RLE Lossless, or lossless JPEG 2000 through pylibjpeg-openjpeg) before
timing: PACS archives usually store compressed pixel data, where decoding dominates the cost.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import JPEG2000Lossless, RLELossless

from pipeline.config import load_config
from pipeline.data.demo_medical import MedicalDemoSpec, write_medical_demo
from pipeline.data.ingest import read_folder
from pipeline.data.sources import list_dicom_files


SYNTAXES = {"rle": RLELossless, "jpeg2000": JPEG2000Lossless}


def recompress(files: list[Path], syntax: str) -> None:
    for path in files:
        ds = pydicom.dcmread(path)
        ds.compress(SYNTAXES[syntax])
        ds.save_as(path)


def raw_decode(files: list[Path]) -> float:
    started = time.perf_counter()
    for path in files:
        pydicom.dcmread(path).pixel_array  # noqa: B018  (decoding is the point)
    return len(files) / (time.perf_counter() - started)


def ingest_rate(source: Path, workers: int) -> tuple[float, int]:
    cfg = load_config(Path(__file__).resolve().parents[1] / "params.yaml").data["medical"]
    started = time.perf_counter()
    found = read_folder(source, cfg, "dicom", workers=workers)
    return found.files_seen / (time.perf_counter() - started), len(found.images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--syntax", default="none", choices=["none", *SYNTAXES])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder)
        write_medical_demo(source, MedicalDemoSpec(patients=args.patients, slices_per_patient=args.slices,
                                                   image_size=args.size), seed=0)
        files = list_dicom_files(source)
        if args.syntax != "none":
            recompress(files, args.syntax)
        raw_decode(files[:20])  # warm the page cache and imports for every contestant alike
        result = {"files": len(files), "size": args.size, "syntax": args.syntax, "raw_files_per_s": raw_decode(files)}
        for workers in (1, 2):
            rate, chips = ingest_rate(source, workers)
            assert chips == len(files)
            result[f"ingest_{workers}w_files_per_s"] = rate
            result[f"ratio_{workers}w_vs_raw"] = rate / result["raw_files_per_s"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
