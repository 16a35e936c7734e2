"""DVC stage: detection transfer with one initialisation (simclr / imagenet / random) or the floor."""

import time
from pathlib import Path

from pipeline.data.chips import load_chipset
from pipeline.presets import PRESETS
from pipeline.tasks.evaluate_detection import evaluate_detection, evaluate_detection_floor
from stages.common import start_stage, write_result
from stages.training_common import BackboneFactory, stage_compute

if __name__ == "__main__":
    config, args = start_stage(__doc__, with_init=True)
    started = time.perf_counter()
    chips = load_chipset(Path(config.paths.ingest) / args.domain)
    if args.init == "floor":
        result = evaluate_detection_floor(chips, config.evaluate)
    else:
        make_backbone = BackboneFactory(config, args.domain, args.init, chips.in_chans)
        result = evaluate_detection(make_backbone, config.model.backbone, chips, config.evaluate, {"init": args.init},
                                    compute=stage_compute(config),
                                    augment_preset=PRESETS[config.domain(args.domain).preset].augment)
        result["weights"] = make_backbone.provenance
    write_result(config, args.domain, f"det_{args.init}", result, started)
