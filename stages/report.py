"""DVC stage: one metrics file for `dvc exp show`, label-efficiency CSVs, figures, report.md and report.html."""

import hashlib
import os
import platform
from importlib.metadata import version
from pathlib import Path

import torch

from pipeline.presets import PRESETS
from pipeline.report.build import ReportInputs, build_report
from stages.common import start_stage

LIBRARIES = ("torch", "torchvision", "timm", "albumentations", "pydicom", "rasterio", "scikit-learn", "dvc")


def hardware() -> str:
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)} × {torch.cuda.device_count()}"
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return f"CPU {names[0] if names else platform.machine()}, {len(names) or '?'} cores, no GPU"


if __name__ == "__main__":
    config, args = start_stage(__doc__)
    params_text = Path(args.params).read_bytes()
    simclr = config.simclr
    provenance = {
        "params": f"{args.params} sha256 {hashlib.sha256(params_text).hexdigest()[:12]}; seed {config.seed}",
        "backbone": f"{config.model.backbone} (ImageNet weights: {config.model.imagenet_weights})",
        "SimCLR": simclr.describe(),
        "evaluation": f"seeds {list(config.evaluate.seeds)} (linear probes and floors: "
                      f"{len(config.evaluate.linear_seeds)} seeds); fine-tune {config.evaluate.finetune.describe()}"
                      f"{', linear probe first' if config.evaluate.finetune.linear_probe_first else ''}; "
                      f"segmentation {config.evaluate.segmentation.describe()}; "
                      f"detection {config.evaluate.detection.describe()}",
        "software": f"python {platform.python_version()}, " + ", ".join(f"{name} {version(name)}" for name in LIBRARIES),
        "hardware": f"{hardware()}, {torch.get_num_threads()} torch threads",
    }
    build_report(ReportInputs(
        evaluate_dir=Path(config.paths.evaluate), pretrain_dir=Path(config.paths.pretrain),
        ingest_dir=Path(config.paths.ingest), reports_dir=Path(config.paths.reports),
        domains={domain: PRESETS[config.domain(domain).preset] for domain in config.grid.domains},
        label_fraction=config.evaluate.label_fraction, label_fractions=list(config.evaluate.label_fractions),
        seed=config.seed, image_size=simclr.image_size, crop_scale=simclr.crop_scale,
        projection_dim=simclr.projection_dim, provenance=provenance,
        workers=config.runtime.parallel_runs or os.cpu_count() or 1,
    ))
