"""DVC stage: write the embedded demo data set of one domain (real DICOM / GeoTIFF files)."""

from pathlib import Path

from pipeline.atomic import atomic_dir
from pipeline.data.demo import write_demo
from pipeline.presets import PRESETS
from stages.common import start_stage

if __name__ == "__main__":
    config, args = start_stage(__doc__)
    preset = PRESETS[config.domain(args.domain).preset]
    with atomic_dir(Path(config.paths.demo) / args.domain) as out:
        write_demo(preset.demo, config.demo, out, config.seed)
