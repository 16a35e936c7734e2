"""What the training and evaluation stages share: device and precision, and fresh backbones of one init."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from torch import nn

from pipeline.config import Config
from pipeline.models.backbone import create_backbone, provenance_dict
from pipeline.runtime import Compute, resolve_compute


def stage_compute(config: Config) -> Compute:
    """Device, precision and side-by-side runs from ``runtime.*``; under torchrun each rank takes GPU
    ``LOCAL_RANK``."""
    try:
        return resolve_compute(
            config.runtime.device, config.runtime.precision, int(os.environ.get("LOCAL_RANK", "0")), config.runtime.compile,
            config.runtime.parallel_runs, config.runtime.torch_threads,
        )
    except ValueError as error:
        sys.exit(f"error: params.yaml: {error}")


class BackboneFactory:
    """Fresh weights of one initialisation on every call (each seed and fraction starts from the same
    weights); remembers where they came from, for the result's provenance."""

    def __init__(self, config: Config, domain: str, init: str, in_chans: int):
        self.config, self.domain, self.init, self.in_chans = config, domain, init, in_chans
        self.built: dict = {}

    def __call__(self) -> nn.Module:
        model, weights = create_backbone(
            self.config.model.backbone, self.init, self.in_chans, seed=self.config.seed,
            imagenet_weights=self.config.model.imagenet_weights,
            simclr_export=Path(self.config.paths.pretrain) / self.domain,
        )
        self.built = provenance_dict(weights)
        return model

    @property
    def provenance(self) -> dict:
        """Where the weights came from; builds them once here when every build ran in a side-by-side process."""
        if not self.built:
            self()
        return self.built
