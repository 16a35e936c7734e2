"""Fine-tuning a classifier (backbone + linear head) on a labelled subset, by the shared transfer protocol
(:mod:`pipeline.tasks.transfer_loop`)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.augment import build_view_transform
from pipeline.config import FinetuneConfig
from pipeline.data.chips import ChipSet
from pipeline.data.datasets import ChannelStandardiser, augment_one_view, resize_batch
from pipeline.metrics import classification_metrics
from pipeline.models.heads import Classifier
from pipeline.runtime import Compute
from pipeline.training.optim import transfer_optimizer
from pipeline.data.subsets import epoch_batches
from pipeline.tasks.transfer_loop import plan_schedule, train_with_validation


def finetune_classifier(
    backbone: nn.Module, chips: ChipSet, train_indices: np.ndarray, val_indices: np.ndarray, cfg: FinetuneConfig,
    augment_preset: str, seed: int, compute: Compute = Compute(),
    head_init: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[nn.Module, dict]:
    """Fine-tune the whole backbone with a new head; return the model with its best validation weights and
    the training record.

    The backbone gets ``cfg.lr`` and the head ``cfg.lr · head_lr_multiplier``. ``head_init`` (weight, bias)
    starts the head from a linear probe (LP-FT) instead of at random. Batches and augmentations are drawn
    from generators seeded by ``seed``, so a run is reproducible on CPU.
    """
    torch.manual_seed(seed)
    model = Classifier(backbone, len(chips.classes))
    if head_init is not None:
        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(head_init[0]))
            model.head.bias.copy_(torch.from_numpy(head_init[1]))
    model = model.to(compute.device, memory_format=torch.channels_last)
    optimizer = transfer_optimizer(model.backbone.parameters(), model.head.parameters(), cfg.lr,
                                   cfg.head_lr_multiplier, cfg.weight_decay, compute.device)
    size = cfg.image_size or int(chips.images.shape[-1])
    standardise = ChannelStandardiser(chips.mean, chips.std)
    transform = build_view_transform(augment_preset, size, spatial_only=cfg.augmentation == "spatial")
    labels = torch.as_tensor(chips.labels[train_indices])

    def prepared():
        rng = np.random.default_rng([seed, 7])
        for step, batch in enumerate(epoch_batches(rng, len(train_indices), cfg.batch_size)):
            views = [augment_one_view(transform, chips.images[train_indices[i]], [seed, step, int(i)]) for i in batch]
            yield standardise(torch.from_numpy(np.stack(views))), labels[batch]

    def loss_of(batch) -> torch.Tensor:
        views, targets = batch
        with compute.autocast():
            logits = model(views.to(compute.device))
        return F.cross_entropy(logits.float(), targets.to(compute.device))

    def validate() -> float:
        return validation_score(chips.labels[val_indices], predict_proba(model, chips, val_indices, compute=compute,
                                                                         image_size=size))

    record = train_with_validation(model, optimizer, plan_schedule(len(train_indices), cfg), prepared(), loss_of,
                                   validate if len(val_indices) else None,
                                   cfg.freeze_pretrained_batchnorm, validate_start=head_init is not None,
                                   prefetch=compute.device.type != "cpu")
    return model, record


def validation_score(labels: np.ndarray, proba: np.ndarray) -> float:
    """The primary metric that picks the best weights: AUROC (the report's headline), accuracy where AUROC is
    undefined (one class in the validation split)."""
    metrics = classification_metrics(labels, proba)
    return metrics["acc"] if math.isnan(metrics["auroc"]) else metrics["auroc"]


@torch.no_grad()
def predict_proba(model: nn.Module, chips: ChipSet, indices: np.ndarray, batch_size: int = 256,
                  compute: Compute = Compute(), image_size: int | None = None) -> np.ndarray:
    """(len(indices), K) class probabilities; chips are resized to ``image_size`` when given."""
    model.eval()
    standardise = ChannelStandardiser(chips.mean, chips.std)
    outputs = []
    for start in range(0, len(indices), batch_size):
        batch = torch.from_numpy(np.asarray(chips.images[indices[start : start + batch_size]], dtype=np.float32))
        with compute.autocast():
            logits = model(standardise(resize_batch(batch, image_size)).to(compute.device))
        outputs.append(logits.float().softmax(dim=1).cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, len(chips.classes)), np.float32)
