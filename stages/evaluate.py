"""DVC stage: classification (linear probe and fine-tuning) with one initialisation (simclr / imagenet / random)."""

import time
from pathlib import Path

from pipeline.data.chips import load_chipset
from pipeline.presets import PRESETS
from pipeline.transfer.classification import evaluate_classification
from stages.common import start_stage, write_result
from stages.training_common import BackboneFactory, stage_compute

if __name__ == "__main__":
    config, args = start_stage(__doc__, with_init=True)
    started = time.perf_counter()
    chips = load_chipset(Path(config.paths.ingest) / args.domain)
    make_backbone = BackboneFactory(config, args.domain, args.init, chips.in_chans)
    result = evaluate_classification(make_backbone, chips, config.evaluate,
                                     PRESETS[config.domain(args.domain).preset].augment, {"init": args.init},
                                     compute=stage_compute(config))
    result["weights"] = make_backbone.provenance
    write_result(config, args.domain, args.init, result, started)
