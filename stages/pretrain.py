"""DVC stage: SimCLR pretraining of one domain; exports the backbone (timm state dict + stats).

Runs as one process, or under ``torchrun --nproc_per_node=N -m stages.pretrain --domain D`` as N
data-parallel ranks; only rank 0 logs, checkpoints and writes the outputs.
"""

import hashlib
import json
import time
from pathlib import Path

from dvclive import Live

from pipeline.atomic import atomic_dir, write_json
from pipeline.data.chips import load_chipset
from pipeline.models.backbone import create_backbone, export_backbone, provenance_dict
from pipeline.models.heads import SimCLRModel
from pipeline.presets import PRESETS
from pipeline.ssl.distributed import init_distributed, shutdown_distributed
from pipeline.ssl.train import pretrain_simclr
from stages.common import start_stage
from stages.training_common import stage_compute


def resume_key(config, domain: str, chips, world_size: int) -> str:
    """What a checkpoint must share with this run to be resumed: every param that shapes training."""
    identity = {
        "seed": config.seed, "model": config.model.model_dump(), "domain": config.domain(domain).model_dump(),
        "simclr": config.simclr.model_dump(exclude={"resume", "checkpoint_every_steps"}), "world_size": world_size,
        "train_chips": len(chips.indices("train")), "mean": chips.mean.tolist(), "std": chips.std.tolist(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def exported_knn(history) -> float:
    """Validation kNN accuracy of the exported weights (the best epoch's under ``simclr.export: best_knn``)."""
    if history.exported_epoch is None:
        return history.last("knn_acc")
    return next(row["knn_acc"] for row in history.epochs if row["epoch"] == history.exported_epoch)


def main() -> None:
    config, args = start_stage(__doc__)
    started = time.perf_counter()
    cfg, domain = config.simclr, args.domain
    compute = stage_compute(config)
    context = init_distributed(compute.device.type)
    chips = load_chipset(Path(config.paths.ingest) / domain)
    backbone, provenance = create_backbone(
        config.model.backbone, cfg.init, chips.in_chans, seed=config.seed, imagenet_weights=config.model.imagenet_weights
    )
    model = SimCLRModel(backbone, cfg.projection_hidden_dim, cfg.projection_dim)
    live = None
    if context.is_main:
        live = Live(str(Path(config.paths.reports) / "pretrain" / domain), dvcyaml=False, save_dvc_exp=False, report=None)
    try:
        history = pretrain_simclr(
            model, chips, cfg, PRESETS[config.domain(domain).preset].augment, config.seed,
            num_workers=config.runtime.num_workers, live=live,
            checkpoint_path=Path(config.paths.checkpoints) / domain / "last.pt",
            compute=compute, context=context, resume_key=resume_key(config, domain, chips, context.world_size),
        )
    finally:
        if live is not None:
            live.end()
        shutdown_distributed()
    if not context.is_main:
        return
    with atomic_dir(Path(config.paths.pretrain) / domain) as out:
        export_backbone(model.backbone.cpu(), out, {
            "backbone": config.model.backbone, "in_chans": chips.in_chans, "channel_names": chips.channel_names,
            "mean": chips.mean.tolist(), "std": chips.std.tolist(), "epochs": cfg.epochs,
            "started_from": provenance.init, "stem_policy": provenance.stem_policy,
            "exported_epoch": cfg.epochs if history.exported_epoch is None else history.exported_epoch,
        })
        write_json(out / "summary.json", {
            "history": history.epochs, "start": provenance_dict(provenance),
            "wall_s": round(time.perf_counter() - started, 1),  # provenance only; never part of metrics.json
            "metrics": {"final_loss": history.last("loss"), "final_top1": history.last("top1"),
                        "final_embedding_std": history.last("embedding_std"),
                        "knn_acc": exported_knn(history), "knn_acc_last": history.last("knn_acc"),
                        "knn_acc_before": history.epochs[0].get("knn_acc", float("nan"))},
            "exported_epoch": cfg.epochs if history.exported_epoch is None else history.exported_epoch,
        })


if __name__ == "__main__":
    main()
