"""DVC stage: segmentation transfer with one initialisation (simclr / imagenet / random) or the floor."""

import time
from pathlib import Path

from pipeline.data.chips import load_chipset
from pipeline.presets import PRESETS
from pipeline.tasks.evaluate_segmentation import evaluate_segmentation, evaluate_segmentation_floor
from stages.common import start_stage, write_result

if __name__ == "__main__":
    config, args = start_stage(__doc__, with_init=True, uses_torch=lambda args: args.init != "floor")
    started = time.perf_counter()
    chips = load_chipset(Path(config.paths.ingest) / args.domain)
    if args.init == "floor":
        result = evaluate_segmentation_floor(chips, config.evaluate)
    else:  # torch and timm are loaded for the trained inits only
        from stages.training_common import BackboneFactory, stage_compute

        make_backbone = BackboneFactory(config, args.domain, args.init, chips.in_chans)
        result = evaluate_segmentation(make_backbone, config.model.backbone, chips, config.evaluate,
                                       PRESETS[config.domain(args.domain).preset].augment, {"init": args.init},
                                       compute=stage_compute(config))
        result["weights"] = make_backbone.provenance
    write_result(config, args.domain, f"seg_{args.init}", result, started)
