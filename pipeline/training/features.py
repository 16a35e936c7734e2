"""Frozen-feature evaluation: feature extraction and weighted kNN (docs/background.md §2.1); the linear probe is in
:mod:`pipeline.transfer.linear`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from pipeline.data.chips import ChipSet
from pipeline.data.datasets import ChannelStandardiser, ChipDataset, resize_batch
from pipeline.runtime import Compute


@torch.no_grad()
def extract_features(
    backbone: nn.Module, chips: ChipSet, indices: np.ndarray, batch_size: int = 256, compute: Compute = Compute(),
    image_size: int | None = None,
) -> np.ndarray:
    """Pooled representation h of each chip, (len(indices), F) float32, backbone in eval mode; chips resized to
    ``image_size`` first (None = as cached), so that a backbone trained on views of another size than the cache's
    chips is probed at the size it learned on."""
    was_training = backbone.training
    backbone.eval().to(compute.device)
    standardise = ChannelStandardiser(chips.mean, chips.std)
    loader = DataLoader(ChipDataset(chips, indices), batch_size=batch_size, shuffle=False)
    features = []
    for images, _ in loader:
        with compute.autocast():
            features.append(backbone(standardise(resize_batch(images, image_size)).to(compute.device)).float().cpu())
    backbone.train(was_training)
    if not features:
        return np.zeros((0, getattr(backbone, "num_features", 0)), dtype=np.float32)
    return torch.cat(features).numpy()


def knn_predict_proba(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    query_features: np.ndarray,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> np.ndarray:
    """Cosine, temperature-weighted kNN vote (Wu et al. 2018, as used for SSL monitoring).

    Returns (Q, num_classes) class scores that sum to 1 per row.
    """
    train = F.normalize(torch.as_tensor(train_features, dtype=torch.float32), dim=1)
    query = F.normalize(torch.as_tensor(query_features, dtype=torch.float32), dim=1)
    k = min(k, len(train))
    similarity, neighbour = (query @ train.T).topk(k, dim=1)
    weights = (similarity / temperature).exp()
    votes = torch.zeros(len(query), num_classes)
    votes.scatter_add_(1, torch.as_tensor(train_labels, dtype=torch.long)[neighbour], weights)
    return (votes / votes.sum(dim=1, keepdim=True)).numpy()
