"""The SimCLR training loop, readable in one sitting (DOMAIN.md §1).

Both views go through the encoder in one forward pass (BatchNorm sees them together), the loss is
NT-Xent in fp32, the learning rate follows a linear warmup then cosine (timm's scheduler), BN and bias
parameters are excluded from weight decay (and from LARS adaptation), gradients are clipped.
Monitors per epoch: loss, contrastive top-1, lr, std of the L2-normalised embeddings (→ 0 on collapse),
and every few epochs a kNN accuracy on the labelled validation chips, logged from step 0 so the
untrained network's score is the baseline SimCLR has to beat.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import Lars, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from pipeline.atomic import atomic_file
from pipeline.config import SimCLRConfig
from pipeline.data.chips import ChipSet
from pipeline.data.datasets import ChannelStandardiser, TwoViewDataset
from pipeline.metrics import classification_metrics
from pipeline.models.heads import SimCLRModel
from pipeline.ssl.loss import nt_xent
from pipeline.tasks.probe import extract_features, knn_predict_proba

log = logging.getLogger(__name__)


@dataclass
class PretrainHistory:
    """Per-epoch monitor values (epoch 0 = before training, kNN only)."""

    epochs: list[dict[str, float]] = field(default_factory=list)

    def last(self, key: str) -> float:
        values = [row[key] for row in self.epochs if key in row]
        return values[-1] if values else float("nan")


def build_optimizer(model: nn.Module, cfg: SimCLRConfig) -> torch.optim.Optimizer:
    """AdamW (robust for small CPU batches) or LARS; 1-D params (BN, bias) get no decay / adaptation."""
    groups = param_groups_weight_decay(model, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lars":
        return Lars(groups, lr=cfg.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def knn_accuracy(backbone: nn.Module, chips: ChipSet, k: int) -> float:
    """kNN accuracy of frozen features: labelled train chips vote for labelled val chips."""
    train, val = chips.indices("train", labelled=True), chips.indices("val", labelled=True)
    if len(train) == 0 or len(val) == 0:
        return float("nan")
    proba = knn_predict_proba(
        extract_features(backbone, chips, train),
        chips.labels[train],
        extract_features(backbone, chips, val),
        len(chips.classes),
        k=k,
    )
    return classification_metrics(chips.labels[val], proba)["acc"]


def pretrain_simclr(
    model: SimCLRModel,
    chips: ChipSet,
    cfg: SimCLRConfig,
    augment_preset: str,
    seed: int,
    num_workers: int = 0,
    live: Any | None = None,
    checkpoint_path: Path | None = None,
) -> PretrainHistory:
    """Train ``model`` in place on the train split of ``chips``; return the monitor history."""
    dataset = TwoViewDataset(chips, chips.indices("train"), augment_preset, cfg.image_size, seed)
    batch_size = min(cfg.batch_size, len(dataset))
    if batch_size < 2:
        raise ValueError(f"SimCLR needs at least 2 training chips, the train split has {len(dataset)}")
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
        num_workers=num_workers, persistent_workers=num_workers > 0,
    )
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = build_optimizer(model, cfg)
    scheduler = CosineLRScheduler(
        optimizer, t_initial=total_steps, warmup_t=round(cfg.warmup_epochs * steps_per_epoch),
        warmup_lr_init=cfg.lr * 0.01, warmup_prefix=True, t_in_epochs=False,
    )
    standardise = ChannelStandardiser(chips.mean, chips.std)
    history = PretrainHistory()
    _log_epoch(live, history, {"knn_acc": knn_accuracy(model.backbone, chips, cfg.knn_k)} if cfg.knn_every_epochs else {})
    step = 0
    progress = tqdm(total=total_steps, desc="simclr", unit="step", dynamic_ncols=True)
    for epoch in range(1, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        model.train()
        sums = {"loss": 0.0, "top1": 0.0, "embedding_std": 0.0}
        for pairs in loader:  # (B, 2, C, S, S)
            scheduler.step_update(step)
            views = standardise(torch.cat([pairs[:, 0], pairs[:, 1]]))
            _, projections = model(views)
            z_a, z_b = projections.float().chunk(2)
            out = nt_xent(z_a, z_b, cfg.temperature)
            if not torch.isfinite(out.loss):
                raise FloatingPointError(f"non-finite SimCLR loss at step {step} (epoch {epoch}); lower simclr.lr")
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if cfg.grad_clip_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
            optimizer.step()
            step += 1
            sums["loss"] += out.loss.item()
            sums["top1"] += float(out.top1)
            sums["embedding_std"] += F.normalize(projections.detach().float(), dim=1).std(dim=0).mean().item()
            progress.update()
            progress.set_postfix(loss=f"{out.loss.item():.3f}", top1=f"{float(out.top1):.2f}")
        row = {key: value / steps_per_epoch for key, value in sums.items()}
        row["lr"] = optimizer.param_groups[0]["lr"]
        if cfg.knn_every_epochs and (epoch % cfg.knn_every_epochs == 0 or epoch == cfg.epochs):
            row["knn_acc"] = knn_accuracy(model.backbone, chips, cfg.knn_k)
        _log_epoch(live, history, row)
        log.info("epoch %d/%d %s", epoch, cfg.epochs, {k: round(v, 4) for k, v in row.items()})
        if checkpoint_path is not None:
            _save_checkpoint(checkpoint_path, model, optimizer, epoch, step)
    progress.close()
    return history


def _log_epoch(live: Any | None, history: PretrainHistory, row: dict[str, float]) -> None:
    history.epochs.append({"epoch": len(history.epochs), **row})
    if live is None:
        return
    for key, value in row.items():
        if not math.isnan(value):
            live.log_metric(f"pretrain/{key}", value)
    live.next_step()


def _save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, step: int) -> None:
    with atomic_file(path, "wb") as stream:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step}, stream)


def embedding_std_reference(dim: int) -> float:
    """Std of uniformly spread unit vectors per dimension (≈ 1/√D): the no-collapse reference."""
    return 1.0 / float(np.sqrt(dim))
