"""DVC stage: decode one domain's source folder into the chip cache (+ manifest, train-only stats)."""

from pathlib import Path

from pipeline.atomic import atomic_dir
from pipeline.data.ingest import ingest_folder
from pipeline.presets import PRESETS
from stages.common import start_stage

if __name__ == "__main__":
    config, args = start_stage(__doc__)
    section = config.domain(args.domain)
    source = Path(config.paths.demo) / args.domain if section.source == "demo" else Path(section.source)
    with atomic_dir(Path(config.paths.ingest) / args.domain) as out:
        ingest_folder(source, section, PRESETS[section.preset], config.seed, out)
