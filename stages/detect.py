"""DVC stage: detection transfer with one initialisation (simclr / imagenet / random)."""

import time
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.data.chips import load_chipset
from pipeline.models.backbone import create_backbone, provenance_dict
from pipeline.tasks.evaluate_detection import evaluate_detection
from stages.common import stage_compute, start_stage

if __name__ == "__main__":
    config, args = start_stage(__doc__, with_init=True)
    started = time.perf_counter()
    domain, init = args.domain, args.init
    chips = load_chipset(Path(config.paths.ingest) / domain)
    provenance = {}

    def make_backbone():
        model, weights = create_backbone(
            config.model.backbone, init, chips.in_chans, seed=config.seed,
            imagenet_weights=config.model.imagenet_weights, simclr_export=Path(config.paths.pretrain) / domain,
        )
        provenance.update(provenance_dict(weights))
        return model

    result = evaluate_detection(make_backbone, config.model.backbone, chips, config.evaluate, {"init": init},
                                compute=stage_compute(config))
    result["weights"] = provenance
    result["wall_s"] = round(time.perf_counter() - started, 1)  # provenance only; never part of metrics.json
    write_json(Path(config.paths.evaluate) / domain / f"det_{init}.json", result)
