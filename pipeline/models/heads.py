"""Task heads that sit on the shared pooled-feature backbone."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """SimCLR's g(·): Linear → BN → ReLU → Linear, mapping h (B, F) to z (B, out_dim).

    The loss is computed on z; downstream tasks use h, the input of this head (docs/background.md §1).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class SimCLRModel(nn.Module):
    """Encoder f plus projection head g; returns both h and z so monitors can look at either."""

    def __init__(self, backbone: nn.Module, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ProjectionHead(backbone.num_features, hidden_dim, out_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(images)
        return features, self.head(features)


class Classifier(nn.Module):
    """Backbone + linear classification head for fine-tuning."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))
