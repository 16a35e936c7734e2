"""DVC stage: SimCLR pretraining of one domain; exports the backbone (timm state dict + stats)."""

from pathlib import Path

from dvclive import Live

from pipeline.atomic import atomic_dir, write_json
from pipeline.data.chips import load_chipset
from pipeline.models.backbone import create_backbone, export_backbone, provenance_dict
from pipeline.models.heads import SimCLRModel
from pipeline.presets import PRESETS
from pipeline.ssl.train import pretrain_simclr
from stages.common import start_stage

if __name__ == "__main__":
    config, args = start_stage(__doc__)
    cfg, domain = config.simclr, args.domain
    chips = load_chipset(Path(config.paths.ingest) / domain)
    backbone, provenance = create_backbone(
        config.model.backbone, cfg.init, chips.in_chans, seed=config.seed, imagenet_weights=config.model.imagenet_weights
    )
    model = SimCLRModel(backbone, cfg.projection_hidden_dim, cfg.projection_dim)
    live_dir = Path(config.paths.reports) / "pretrain" / domain
    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        history = pretrain_simclr(
            model, chips, cfg, PRESETS[config.domain(domain).preset].augment, config.seed,
            num_workers=config.runtime.num_workers, live=live,
            checkpoint_path=Path(config.paths.checkpoints) / domain / "last.pt",
        )
    with atomic_dir(Path(config.paths.pretrain) / domain) as out:
        export_backbone(model.backbone, out, {
            "backbone": config.model.backbone, "in_chans": chips.in_chans, "channel_names": chips.channel_names,
            "mean": chips.mean.tolist(), "std": chips.std.tolist(), "epochs": cfg.epochs,
            "started_from": provenance.init, "stem_policy": provenance.stem_policy,
        })
        write_json(out / "summary.json", {
            "history": history.epochs, "start": provenance_dict(provenance),
            "metrics": {"final_loss": history.last("loss"), "final_top1": history.last("top1"),
                        "final_embedding_std": history.last("embedding_std"),
                        "knn_acc": history.last("knn_acc"), "knn_acc_before": history.epochs[0].get("knn_acc", float("nan"))},
        })
