"""DVC stage: decode one domain's source folder into the chip cache (+ manifest, train-only stats).

The cache is written atomically: an interrupted or failed ingest never leaves a half-written cache that looks
complete. Run on its own, a failed ingest leaves the previous cache untouched; under ``dvc repro`` DVC has
already removed the stage's outputs before it starts, and ``dvc checkout data/ingest/<domain>`` restores the
last good cache from DVC's cache. The outcome report goes to ``reports/ingest/<domain>.json``, also when no
file gave a chip (then it lists every file's reason).

Ingest's worker processes are spawned, and a spawned process re-imports this module (as ``__mp_main__``)
before it reads a file: it imports no torch (neither does :mod:`stages.common`), so a worker only imports the
readers (~1 s instead of ~5 s with torch and timm on this CPU).
"""

import sys
import time
from pathlib import Path

from pipeline.atomic import atomic_dir, write_json
from pipeline.ingest.folder import IngestError, IngestFailed, ingest_folder
from pipeline.presets import PRESETS
from stages.common import start_stage

if __name__ == "__main__":
    config, args = start_stage(__doc__, uses_torch=False)
    started = time.perf_counter()
    section = config.domain(args.domain)
    source = section.source_folder(config.paths.demo, args.domain)
    report_path = Path(config.paths.reports) / "ingest" / f"{args.domain}.json"
    try:
        with atomic_dir(Path(config.paths.ingest) / args.domain) as out:
            report = ingest_folder(source, section, PRESETS[section.preset], config.seed, out,
                                   workers=config.ingest.workers, strict=config.ingest.strict, domain=args.domain,
                                   source_label=section.source)
    except IngestFailed as error:
        write_json(report_path, {**error.report, "wall_s": round(time.perf_counter() - started, 1)})
        sys.exit(f"error: ingest {args.domain}: {error} (every file's reason: {report_path})")
    except (IngestError, FileNotFoundError, ValueError) as error:
        sys.exit(f"error: ingest {args.domain}: {error}")
    write_json(report_path, {**report, "wall_s": round(time.perf_counter() - started, 1)})
