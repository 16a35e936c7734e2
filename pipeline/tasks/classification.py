"""Fine-tuning a classifier (backbone + linear head) on a small labelled subset."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.augment import build_view_transform
from pipeline.config import FinetuneConfig
from pipeline.data.chips import ChipSet
from pipeline.data.datasets import ChannelStandardiser, augment_one_view
from pipeline.data.subsets import draw_batch
from pipeline.models.heads import Classifier
from pipeline.runtime import Compute
from pipeline.tasks.optim import transfer_optimizer


def finetune_classifier(
    backbone: nn.Module,
    chips: ChipSet,
    train_indices: np.ndarray,
    test_indices: np.ndarray,
    cfg: FinetuneConfig,
    augment_preset: str,
    seed: int,
    compute: Compute = Compute(),
) -> np.ndarray:
    """Fine-tune the whole backbone with a new head; return (len(test), K) test probabilities.

    The backbone gets ``cfg.lr`` and the fresh head ``cfg.lr · head_lr_multiplier`` (a new layer needs
    to move further than pretrained weights). Batches and augmentations are drawn from generators
    seeded by ``seed``, so a run is reproducible on CPU.
    """
    torch.manual_seed(seed)
    model = Classifier(backbone, len(chips.classes)).to(compute.device, memory_format=torch.channels_last)
    optimizer, scheduler = transfer_optimizer(model.backbone.parameters(), model.head.parameters(), cfg.lr,
                                              cfg.head_lr_multiplier, cfg.weight_decay, cfg.steps, compute.device)
    standardise = ChannelStandardiser(chips.mean, chips.std)
    transform = build_view_transform(augment_preset, chips.images.shape[-1])
    images = np.asarray(chips.images[train_indices], dtype=np.float32)
    labels = torch.as_tensor(chips.labels[train_indices])
    rng = np.random.default_rng([seed, 7])
    model.train()
    for step in range(cfg.steps):
        scheduler.step_update(step)
        batch = draw_batch(rng, len(images), cfg.batch_size)
        views = np.stack([augment_one_view(transform, images[i], [seed, step, int(i)]) for i in batch])
        with compute.autocast():
            logits = model(standardise(torch.from_numpy(views)).to(compute.device))
        loss = F.cross_entropy(logits.float(), labels[batch].to(compute.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return predict_proba(model, chips, test_indices, compute=compute)


@torch.no_grad()
def predict_proba(
    model: nn.Module, chips: ChipSet, indices: np.ndarray, batch_size: int = 256, compute: Compute = Compute()
) -> np.ndarray:
    model.eval()
    standardise = ChannelStandardiser(chips.mean, chips.std)
    outputs = []
    for start in range(0, len(indices), batch_size):
        batch = torch.from_numpy(np.asarray(chips.images[indices[start : start + batch_size]], dtype=np.float32))
        with compute.autocast():
            outputs.append(model(standardise(batch).to(compute.device)).float().softmax(dim=1).cpu())
    return torch.cat(outputs).numpy()
