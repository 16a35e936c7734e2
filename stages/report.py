"""DVC stage: one metrics file for `dvc exp show` and the Markdown comparison report."""

import platform
from pathlib import Path

import torch

from pipeline.atomic import atomic_file, write_json
from pipeline.report import collect_metrics, render_markdown
from stages.common import start_stage

if __name__ == "__main__":
    config, _ = start_stage(__doc__)
    reports = Path(config.paths.reports)
    metrics = collect_metrics(Path(config.paths.evaluate), Path(config.paths.pretrain), config.grid.domains)
    write_json(reports / "metrics.json", metrics)
    context = {
        "seed": config.seed, "backbone": config.model.backbone, "label fraction": config.evaluate.label_fraction,
        "evaluation seeds": list(config.evaluate.seeds), "SimCLR": f"{config.simclr.epochs} epochs, batch "
        f"{config.simclr.batch_size}, τ {config.simclr.temperature}, {config.simclr.image_size} px",
        "software": f"python {platform.python_version()}, torch {torch.__version__}",
        "cpu": platform.processor() or platform.machine(),
    }
    with atomic_file(reports / "report.md") as stream:
        stream.write(render_markdown(metrics, context))
