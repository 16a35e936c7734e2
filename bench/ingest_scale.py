"""Ingest at scale: wall time, peak RSS and cache size of a whole ``ingest_folder`` on a large generated input.

Each case is generated once into ``--work`` (kept between runs, so before/after comparisons read the same
files), then ingested in a fresh process whose own peak RSS (``resource.getrusage``) is reported, with the
size of the cache on disk and what the same chips take as float32 (the cache's format before compaction):

  dicom   the CT demo generator at ``--patients`` × ``--slices`` slices of ``--size``² (uncompressed DICOM);
  scenes  ``--scenes`` Sentinel-2-like 4-band GeoTIFF scenes of ``--scene-size``² (the remote demo generator);
  big     one tiled, compressed uint16 scene of ``--width`` × ``--height`` (bench/ingest_geotiff.py's writer).

Goal (issue: a chip cache that scales): peak RSS ≤ 1.5 GB whatever the number of files or the size of a scene.

    python bench/ingest_scale.py --case scenes --scenes 300 --scene-size 1024 [--work /tmp/ingest_scale]
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
    shutil.rmtree(source / "masks", ignore_errors=True)
    for name in ("labels.csv", "classes.json", "boxes.json"):
        (source / name).unlink(missing_ok=True)
    (source / ".complete").touch()


def ingest_in_this_process(case: str, source: str, out: str, params: str, workers: int, queue) -> None:
    config = load_config(params)
    section = config.data[DOMAIN_OF[case]]
    section = section.model_copy(update={"source": source})
    started = time.perf_counter()
    report = ingest_folder(Path(source), section, PRESETS[section.preset], config.seed, Path(out), workers=workers,
                           domain=DOMAIN_OF[case])
    queue.put({"seconds": round(time.perf_counter() - started, 1), "chips": report["chips"]["kept"],
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})


def measure(case: str, source: Path, out: Path, params: str, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")  # a fresh process: its peak RSS is the ingest's alone
    queue = context.Queue()
    process = context.Process(target=ingest_in_this_process, args=(case, str(source), str(out), params, workers, queue))
    process.start()
    process.join()  # the child's result is a small dict: it fits the queue's pipe before the child exits
    if process.exitcode != 0:
        raise SystemExit(f"ingest failed in its process (exit code {process.exitcode}); its traceback is above")
    result = queue.get(timeout=60)
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
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--scene-size", type=int, default=1024)
    parser.add_argument("--width", type=int, default=36000)
    parser.add_argument("--height", type=int, default=18000)
    parser.add_argument("--bands", type=int, default=4)
    args = parser.parse_args()
    shape = {"dicom": f"{args.patients}x{args.slices}x{args.size}", "scenes": f"{args.scenes}x{args.scene_size}",
             "big": f"{args.width}x{args.height}x{args.bands}"}[args.case]
    source = args.work / f"{args.case}-{shape}"
    started = time.perf_counter()
    generate(args.case, source, args)
    generated_s = time.perf_counter() - started
    result = measure(args.case, source, args.work / "cache", args.params, args.workers)
    print(json.dumps({"case": args.case, "input": shape, "generate_s": round(generated_s, 1), **result}, indent=2))


if __name__ == "__main__":
    main()
