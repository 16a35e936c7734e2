"""What ingest keeps and what the network sees are independent sizes: views, kNN and probe features are resized."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.data.chips import ChipSet
from pipeline.data.datasets import TwoViewDataset, resize_batch
from pipeline.models.backbone import create_backbone
from pipeline.training.features import extract_features


def _chips(n: int, size: int) -> ChipSet:
    rng = np.random.default_rng(0)
    return ChipSet(images=rng.uniform(0, 1, (n, 3, size, size)).astype(np.float32),
                   valid=np.ones((n, size, size), bool),
                   manifest=[{"split": "train", "label": "a"} for _ in range(n)], classes=["a"],
                   channel_names=["r", "g", "b"], mean=np.full(3, 0.5, np.float32), std=np.full(3, 0.3, np.float32))


def test_resnet50_trains_on_224_views_of_256_chips():
    chips = _chips(2, 256)
    views = torch.cat([TwoViewDataset(chips, np.arange(2), "medical_ct", 224, seed=0)[i] for i in range(2)])
    assert views.shape == (4, 3, 224, 224)
    backbone = create_backbone("resnet50", "random", 3, seed=0)[0]
    with torch.no_grad():
        assert backbone(views).shape == (4, 2048)


def test_probe_features_are_taken_at_the_size_the_network_sees():
    chips = _chips(4, 32)
    backbone = create_backbone("tf_efficientnet_lite0", "random", 3, seed=0)[0]
    resized = extract_features(backbone, chips, np.arange(4), image_size=16)
    small = _chips(4, 16)
    small.images = resize_batch(torch.from_numpy(chips.images), 16).numpy()
    np.testing.assert_allclose(resized, extract_features(backbone, small, np.arange(4)), atol=1e-5)
    assert not np.allclose(resized, extract_features(backbone, chips, np.arange(4)), atol=1e-3)
