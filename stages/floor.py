"""DVC stage: the trivial floor of one task (cls / seg / det) on one domain; imports no torch."""

import time
from pathlib import Path

from pipeline.data.chips import load_chipset
from pipeline.floors import FLOORS
from stages.common import start_stage, write_result

RESULT_NAMES = {"cls": "floor", "seg": "seg_floor", "det": "det_floor"}

if __name__ == "__main__":
    config, args = start_stage(__doc__, uses_torch=False, tasks=sorted(FLOORS))
    started = time.perf_counter()
    chips = load_chipset(Path(config.paths.ingest) / args.domain)
    write_result(config, args.domain, RESULT_NAMES[args.task], FLOORS[args.task](chips, config.evaluate), started)
