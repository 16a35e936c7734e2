"""DVC stage: write the embedded demo data set of one domain (real DICOM / GeoTIFF files)."""

from pathlib import Path

from pipeline.atomic import atomic_dir
from pipeline.demo import write_demo
from pipeline.presets import PRESETS
from stages.common import start_stage

if __name__ == "__main__":
    config, args = start_stage(__doc__, uses_torch=False)
    section = config.domain(args.domain)
    with atomic_dir(Path(config.paths.demo) / args.domain) as out:
        if section.uses_demo:
            write_demo(PRESETS[section.preset].demo, config.demo, out, config.seed)
        else:  # the user's own folder feeds ingest; nothing to generate
            (out / "NOT_USED.txt").write_text(f"data.{args.domain}.source is a folder; no demo generated\n")
