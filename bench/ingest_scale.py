"""Ingest at scale: wall time, peak RSS and cache size of a whole ``ingest_folder`` on a large generated input.

Each case is generated once into ``--work`` (kept between runs, so before/after comparisons read the same
files), then ingested in a fresh process whose own peak RSS (``resource.getrusage``) is reported, with the
size of the cache on disk and what the same chips take as float32 (the cache's format before compaction):

  dicom   the CT demo generator at ``--patients`` × ``--slices`` slices of ``--size``² (uncompressed DICOM);
          ``--copies K`` adds K − 1 re-identified copies of every patient (new names, IDs and UIDs, the anatomy
          shifted), since rendering a phantom slice takes ~60 ms: 250 × 20 × 10 copies = 50,000 slices;
  scenes  ``--scenes`` Sentinel-2-like 4-band GeoTIFF scenes of ``--scene-size``² (the remote demo generator);
  big     one tiled, compressed uint16 scene of ``--width`` × ``--height`` (bench/ingest_geotiff.py's writer).

``--raw`` also times the raw decoder alone on the same files in a fresh process (pydicom's ``pixel_array`` per
file; rasterio reading each scene block by block), the floor of what ingest at one worker can take.
``--parts N`` runs the ingest as N part jobs one after another, each in a fresh process, then the merge
(``pipeline.ingest.parts``), and reports each one's time and peak RSS and whether the cache equals the single run's.

Goals (issue: a chip cache that scales): peak RSS ≤ 1.5 GB whatever the number of files or the size of a scene;
at one worker ≥ 0.9× the raw decoder's throughput.

    python bench/ingest_scale.py --case scenes --scenes 300 --scene-size 1024 [--work /tmp/ingest_scale] [--raw]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.config import load_config  # noqa: E402
from pipeline.demo.medical import MedicalDemoSpec, write_medical_demo  # noqa: E402
from pipeline.demo.remote import RemoteDemoSpec, write_remote_demo  # noqa: E402
from pipeline.ingest.folder import ingest_folder  # noqa: E402
from pipeline.presets import PRESETS  # noqa: E402

DOMAIN_OF = {"dicom": "medical", "scenes": "remote", "big": "remote"}


def generate(case: str, source: Path, args: argparse.Namespace) -> None:
    """Write the case's input once (images only: a PACS export or a scene archive)."""
    if (source / ".complete").exists():
        return
    shutil.rmtree(source, ignore_errors=True)
    if case == "dicom":
        write_medical_demo(source, MedicalDemoSpec(patients=args.patients, slices_per_patient=args.slices,
                                                   image_size=args.size), seed=0)
    elif case == "scenes":
        write_remote_demo(source, RemoteDemoSpec(scenes=args.scenes, scene_size=args.scene_size), seed=0)
    else:
        from bench.ingest_geotiff import write_scene

        source.mkdir(parents=True)
        write_scene(source / "big.tif", args.width, args.height, args.bands)
    if case == "dicom" and args.copies > 1:
        write_copies(source / "images", args.copies)
    shutil.rmtree(source / "masks", ignore_errors=True)
    for name in ("labels.csv", "classes.json", "boxes.json"):
        (source / name).unlink(missing_ok=True)
    (source / ".complete").touch()


def write_copies(images: Path, copies: int) -> None:
    """``copies − 1`` more patients per patient folder: the same slices re-identified (PatientName, PatientID,
    AccessionNumber, every UID) and rolled by a per-copy offset, so they neither share a group nor fingerprint
    as near-duplicates of the original."""
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    originals = sorted(images.rglob("*.dcm"))
    for copy in range(1, copies):
        shift = (17 * copy) % 97 + 5
        for path in originals:
            ds = pydicom.dcmread(path)
            subject = path.relative_to(images).parts[0]
            ds.PatientName, ds.PatientID = f"COPY{copy}^{ds.PatientName}", f"C{copy}{ds.PatientID}"
            ds.AccessionNumber = f"C{copy}{ds.AccessionNumber}"
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
                setattr(ds, keyword, generate_uid(entropy_srcs=[str(getattr(ds, keyword)), str(copy)]))
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            pixels = np.frombuffer(ds.PixelData, "<i2").reshape(ds.Rows, ds.Columns)
            ds.PixelData = np.roll(pixels, (shift, -shift), axis=(0, 1)).tobytes()
            target = images / f"copy{copy:02d}_{subject}" / path.relative_to(images / subject)
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target, enforce_file_format=True)


def peak_rss_mb() -> int:
    """This process's peak RSS: ``VmHWM`` (Linux), which starts afresh at exec; ``ru_maxrss`` would carry the
    parent's peak over into a spawned child (the parent that just generated 5,000 DICOM slices: 1.3 GB)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def ingest_in_this_process(case: str, source: str, out: str, params: str, workers: int, queue) -> None:
    config = load_config(params)
    section = config.data[DOMAIN_OF[case]]
    section = section.model_copy(update={"source": source})
    started = time.perf_counter()
    report = ingest_folder(Path(source), section, PRESETS[section.preset], config.seed, Path(out), workers=workers,
                           domain=DOMAIN_OF[case])
    queue.put({"seconds": round(time.perf_counter() - started, 1), "chips": report["chips"]["kept"],
               "peak_rss_mb": peak_rss_mb()})


def part_in_this_process(case: str, source: str, parts: str, params: str, workers: int, part: str, queue) -> None:
    from pipeline.ingest.part_spec import PartSpec
    from pipeline.ingest.parts import ingest_part

    config = load_config(params)
    section = config.data[DOMAIN_OF[case]].model_copy(update={"source": source})
    started = time.perf_counter()
    ingest_part(Path(source), section, PRESETS[section.preset], PartSpec.parse(part), Path(parts), workers=workers,
                domain=DOMAIN_OF[case])
    queue.put({"seconds": round(time.perf_counter() - started, 1),
               "peak_rss_mb": peak_rss_mb()})


def merge_in_this_process(case: str, source: str, parts: str, out: str, params: str, queue) -> None:
    from pipeline.ingest.parts import merge_parts

    config = load_config(params)
    section = config.data[DOMAIN_OF[case]].model_copy(update={"source": source})
    started = time.perf_counter()
    report = merge_parts(Path(parts), Path(source), section, PRESETS[section.preset], config.seed, Path(out),
                         domain=DOMAIN_OF[case])
    queue.put({"seconds": round(time.perf_counter() - started, 1), "chips": report["chips"]["kept"],
               "peak_rss_mb": peak_rss_mb()})


def raw_decode_in_this_process(case: str, source: str, queue) -> None:
    """The decoder alone: every file's pixels read and dropped (no resize, window, chip or cache)."""
    started = time.perf_counter()
    if case == "dicom":
        import pydicom

        for path in sorted(Path(source).rglob("*.dcm")):
            pydicom.dcmread(path).pixel_array
    else:
        import rasterio

        for path in sorted(Path(source).rglob("*.tif")):
            with rasterio.open(path) as scene:
                for _, window in scene.block_windows(1):
                    scene.read(window=window)
    queue.put({"seconds": round(time.perf_counter() - started, 1),
               "peak_rss_mb": peak_rss_mb()})


def in_fresh_process(target, *args) -> dict:
    """``target(*args, queue)`` in a spawned process: its peak RSS is that work's alone."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    process.join()  # the child's result is a small dict: it fits the queue's pipe before the child exits
    if process.exitcode != 0:
        raise SystemExit(f"{target.__name__} failed (exit code {process.exitcode}); its traceback is above")
    return queue.get(timeout=60)


def measure_parts(case: str, source: Path, work: Path, params: str, workers: int, count: int) -> dict:
    parts, out = work / "parts", work / "merged"
    shutil.rmtree(parts, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    jobs = [in_fresh_process(part_in_this_process, case, str(source), str(parts), params, workers, f"{k}/{count}")
            for k in range(count)]
    merge = in_fresh_process(merge_in_this_process, case, str(source), str(parts), str(out), params)
    same = all((out / p.name).read_bytes() == p.read_bytes() for p in (work / "cache").iterdir() if p.is_file())
    shutil.rmtree(parts, ignore_errors=True)
    return {"parts": count, "part_seconds": [job["seconds"] for job in jobs],
            "part_peak_rss_mb": max(job["peak_rss_mb"] for job in jobs), "merge_seconds": merge["seconds"],
            "merge_peak_rss_mb": merge["peak_rss_mb"], "cache_equals_single_run": same}


def measure(case: str, source: Path, out: Path, params: str, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    result = in_fresh_process(ingest_in_this_process, case, str(source), str(out), params, workers)
    stats = json.loads((out / "stats.json").read_text())
    cache_bytes = sum(path.stat().st_size for path in out.iterdir() if path.is_file())
    channels, size = len(stats["channel_names"]), stats["chip_size"]
    float32_bytes = result["chips"] * channels * size * size * 4
    return {**result, "cache_mb": round(cache_bytes / 2**20, 1), "float32_chips_mb": round(float32_bytes / 2**20, 1),
            "input_mb": round(sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(DOMAIN_OF), required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ingest_scale"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--patients", type=int, default=250)
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--copies", type=int, default=1, help="dicom: re-identified copies of every patient")
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--scene-size", type=int, default=1024)
    parser.add_argument("--width", type=int, default=36000)
    parser.add_argument("--height", type=int, default=18000)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--raw", action="store_true", help="also time the raw decoder on the same files")
    parser.add_argument("--parts", type=int, default=0, help="also run as this many part jobs and a merge")
    args = parser.parse_args()
    copies = f"x{args.copies}" if args.copies > 1 else ""
    shape = {"dicom": f"{args.patients}x{args.slices}x{args.size}{copies}", "scenes": f"{args.scenes}x{args.scene_size}",
             "big": f"{args.width}x{args.height}x{args.bands}"}[args.case]
    source = args.work / f"{args.case}-{shape}"
    started = time.perf_counter()
    generate(args.case, source, args)
    generated_s = time.perf_counter() - started
    result = measure(args.case, source, args.work / "cache", args.params, args.workers)
    if args.raw:
        raw = in_fresh_process(raw_decode_in_this_process, args.case, str(source))
        result |= {"raw_decode_seconds": raw["seconds"], "ingest_vs_raw_throughput": round(raw["seconds"] /
                                                                                            result["seconds"], 2)}
    if args.parts:
        result |= measure_parts(args.case, source, args.work, args.params, args.workers, args.parts)
    print(json.dumps({"case": args.case, "input": shape, "generate_s": round(generated_s, 1), **result}, indent=2))


if __name__ == "__main__":
    main()
