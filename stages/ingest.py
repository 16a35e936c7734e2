"""DVC stage: decode one domain's source folder into the chip cache (+ manifest, train-only stats).

The cache is written atomically: an interrupted or failed ingest never leaves a half-written cache that looks
complete. Run on its own, a failed ingest leaves the previous cache untouched; under ``dvc repro`` DVC has
already removed the stage's outputs before it starts, and ``dvc checkout data/ingest/<domain>`` restores the
last good cache from DVC's cache. The outcome report goes to ``reports/ingest/<domain>.json``, also when no
file gave a chip (then it lists every file's reason).

An archive too large for one machine is ingested as independent jobs (docs/scaling.md): each job runs
``--part I/N --parts-dir DIR`` and decodes its share of the files into ``DIR/<domain>/part-I-of-N``; then one
``--merge-parts DIR`` writes the cache and the report a single run would have written.

Ingest's worker processes are spawned, and a spawned process re-imports this module (as ``__mp_main__``)
before it reads a file: it imports no torch (neither does :mod:`stages.common`), so a worker only imports the
readers (~1 s instead of ~5 s with torch and timm on this CPU).
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from pipeline.atomic import atomic_dir, write_json
from pipeline.ingest.folder import DuplicatePolicy, IngestError, IngestFailed, ingest_folder
from pipeline.ingest.part_spec import PartSpec
from pipeline.ingest.parts import ingest_part, merge_parts
from pipeline.presets import PRESETS
from stages.common import start_stage


def part_options(parser: argparse.ArgumentParser) -> None:
    jobs = parser.add_mutually_exclusive_group()
    jobs.add_argument("--part", metavar="I/N", help="decode only part I (from 0) of N into --parts-dir")
    jobs.add_argument("--merge-parts", metavar="DIR", help="write the cache from the parts in DIR/<domain>")
    parser.add_argument("--parts-dir", metavar="DIR", help="where --part writes (DIR/<domain>/part-I-of-N)")


if __name__ == "__main__":
    config, args = start_stage(__doc__, uses_torch=False, options=part_options)
    started = time.perf_counter()
    section = config.domain(args.domain)
    preset = PRESETS[section.preset]
    source = section.source_folder(config.paths.demo, args.domain)
    report_path = Path(config.paths.reports) / "ingest" / f"{args.domain}.json"
    try:
        if args.part is not None:
            if not args.parts_dir:
                raise ValueError("--part needs --parts-dir (a folder every part and the merge can reach)")
            folder = ingest_part(source, section, preset, PartSpec.parse(args.part), Path(args.parts_dir) / args.domain,
                                 workers=config.ingest.workers, strict=config.ingest.strict, domain=args.domain)
            logging.getLogger("stages.ingest").info("part %s of %s written to %s", args.part, args.domain, folder)
            sys.exit(0)
        duplicates = DuplicatePolicy(config.ingest.near_duplicates, config.ingest.near_duplicate_similarity)
        with atomic_dir(Path(config.paths.ingest) / args.domain) as out:
            if args.merge_parts:
                parts = Path(args.merge_parts) / args.domain
                report = merge_parts(parts, source, section, preset, config.seed, out, domain=args.domain,
                                     source_label=section.source, duplicates=duplicates)
                report["parts"] = len([p for p in parts.iterdir() if p.name.startswith("part-")])
            else:
                report = ingest_folder(source, section, preset, config.seed, out, workers=config.ingest.workers,
                                       strict=config.ingest.strict, domain=args.domain, source_label=section.source,
                                       duplicates=duplicates)
    except IngestFailed as error:
        write_json(report_path, {**error.report, "wall_s": round(time.perf_counter() - started, 1)})
        sys.exit(f"error: ingest {args.domain}: {error} (every file's reason: {report_path})")
    except (IngestError, FileNotFoundError, ValueError) as error:
        sys.exit(f"error: ingest {args.domain}: {error}")
    write_json(report_path, {**report, "wall_s": round(time.perf_counter() - started, 1)})
