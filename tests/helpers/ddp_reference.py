"""Shared pieces of the data-parallel checks: a BatchNorm-free SimCLR model, a chip set, the raw-loss case.

BatchNorm is left out on purpose: PyTorch's SyncBatchNorm has no CPU kernel, so on gloo/CPU each rank
would normalise over its own shard and 2 × B could never equal 1 × 2B. Everything else (sampler shards,
gathered negatives, loss scaling, DDP gradient averaging, the optimiser) is the production code.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.config import SimCLRConfig
from pipeline.data.chips import ChipSet
from pipeline.models.heads import SimCLRModel

GLOBAL_BATCH = 8
CONFIG = SimCLRConfig(init="random", epochs=2, batch_size=GLOBAL_BATCH, image_size=24, knn_every_epochs=0,
                      projection_hidden_dim=16, projection_dim=8, resume=False)
UNEVEN_ROWS = (3, 2)  # projections per rank in the uneven-batch loss check


class TinyBackbone(nn.Module):
    """conv → ReLU → conv → global pool: enough structure for real gradients, no BatchNorm."""

    num_features = 12

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_chans, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, self.num_features, 3), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def make_model(in_chans: int = 4) -> SimCLRModel:
    torch.manual_seed(0)
    model = SimCLRModel(TinyBackbone(in_chans), CONFIG.projection_hidden_dim, CONFIG.projection_dim)
    model.head.layers[1] = nn.Identity()  # the head's BatchNorm1d, see the module docstring
    return model


def make_chips(n: int = 32, channels: int = 4, size: int = 32) -> ChipSet:
    rng = np.random.default_rng(0)
    manifest = [{"split": "train", "label": ""} for _ in range(n)]
    return ChipSet(images=rng.uniform(0, 1, (n, channels, size, size)).astype(np.float32),
                   valid=np.ones((n, size, size), bool), manifest=manifest, classes=[],
                   channel_names=[f"b{i}" for i in range(channels)], mean=np.full(channels, 0.5, np.float32),
                   std=np.full(channels, 0.3, np.float32))


def uneven_projections() -> tuple[torch.Tensor, torch.Tensor]:
    """(5, 6) views a and b; rank r owns rows sum(UNEVEN_ROWS[:r]) … of both."""
    generator = torch.Generator().manual_seed(3)
    total = sum(UNEVEN_ROWS)
    return torch.randn(total, 6, generator=generator), torch.randn(total, 6, generator=generator)
