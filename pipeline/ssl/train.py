"""The SimCLR training loop, readable in one sitting (DOMAIN.md §1).

Both views go through the encoder in one forward pass (BatchNorm sees them together), the loss is
NT-Xent in fp32 (negatives gathered from every rank under torchrun), the learning rate follows a linear
warmup then cosine (timm's scheduler), BN and bias parameters are excluded from weight decay (and from
LARS adaptation), gradients are clipped. Monitors per epoch: loss, contrastive top-1, lr, std of the
L2-normalised embeddings (→ 0 on collapse), and every few epochs a kNN
accuracy on the labelled validation chips, logged from step 0 so the untrained network's score is the
baseline SimCLR has to beat.

A checkpoint is written after every epoch; a run with the same params that finds an unfinished one
continues from it and ends with the same weights and history as an uninterrupted run (views depend
only on (seed, epoch, chip), the sampler on (seed, epoch), the schedule on the step).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.optim import Lars, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from pipeline.atomic import atomic_file
from pipeline.config import SimCLRConfig
from pipeline.data.chips import ChipSet
from pipeline.data.datasets import ChannelStandardiser, TwoViewDataset
from pipeline.data.prefetch import prefetch_in_thread
from pipeline.metrics import classification_metrics
from pipeline.models.heads import SimCLRModel
from pipeline.runtime import Compute
from pipeline.ssl.distributed import DistributedContext, nt_xent_distributed
from pipeline.tasks.probe import extract_features, knn_predict_proba

log = logging.getLogger(__name__)


@dataclass
class PretrainHistory:
    """Per-epoch monitor values (epoch 0 = before training, kNN only)."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    images_per_s: list[float] = field(default_factory=list)  # per epoch; a timing, kept out of the outputs

    def last(self, key: str) -> float:
        values = [row[key] for row in self.epochs if key in row]
        return values[-1] if values else float("nan")


@dataclass
class _Run:
    """Everything one training run mutates, so a checkpoint can save and restore it as a whole."""

    model: SimCLRModel
    optimizer: torch.optim.Optimizer
    history: PretrainHistory
    epoch: int = 0
    step: int = 0


def build_optimizer(model: nn.Module, cfg: SimCLRConfig) -> torch.optim.Optimizer:
    """AdamW (robust for small CPU batches) or LARS; 1-D params (BN, bias) get no decay / adaptation."""
    groups = param_groups_weight_decay(model, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lars":
        return Lars(groups, lr=cfg.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def knn_accuracy(backbone: nn.Module, chips: ChipSet, k: int, compute: Compute = Compute()) -> float:
    """kNN accuracy of frozen features: labelled train chips vote for labelled val chips."""
    train, val = chips.indices("train", labelled=True), chips.indices("val", labelled=True)
    if len(train) == 0 or len(val) == 0:
        return float("nan")
    proba = knn_predict_proba(
        extract_features(backbone, chips, train, compute=compute),
        chips.labels[train],
        extract_features(backbone, chips, val, compute=compute),
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
    compute: Compute = Compute(),
    context: DistributedContext = DistributedContext(),
    resume_key: str = "",
) -> PretrainHistory:
    """Train ``model`` in place on the train split of ``chips``; return the monitor history.

    ``cfg.batch_size`` is the global batch: each of ``context.world_size`` ranks takes its share.
    ``resume_key`` identifies the params a checkpoint belongs to; only a checkpoint with the same key
    and fewer than ``cfg.epochs`` epochs is resumed.
    """
    dataset = TwoViewDataset(chips, chips.indices("train"), augment_preset, cfg.image_size, seed)
    loader, sampler = _make_loader(dataset, cfg.batch_size, seed, num_workers, context)
    steps_per_epoch = len(loader)
    optimizer = build_optimizer(model, cfg)
    scheduler = CosineLRScheduler(
        optimizer, t_initial=cfg.epochs * steps_per_epoch, warmup_t=round(cfg.warmup_epochs * steps_per_epoch),
        warmup_lr_init=cfg.lr * 0.01, warmup_prefix=True, t_in_epochs=False,
    )
    run = _Run(model=model, optimizer=optimizer, history=PretrainHistory())
    model.to(compute.device, memory_format=torch.channels_last)
    if cfg.resume and checkpoint_path is not None:
        _maybe_resume(run, checkpoint_path, resume_key, cfg.epochs, compute.device)
    if run.epoch == 0 and cfg.knn_every_epochs and context.is_main:
        run.history.epochs.append({"epoch": 0, "knn_acc": knn_accuracy(model.backbone, chips, cfg.knn_k, compute)})
    for row in run.history.epochs:
        _log_row(live, row)
    trainer = _wrap_for_training(model, cfg, compute, context)
    standardise = ChannelStandardiser(chips.mean, chips.std)
    progress = tqdm(total=cfg.epochs * steps_per_epoch, initial=run.step, desc="simclr", unit="step",
                    dynamic_ncols=True, disable=not context.is_main)
    for epoch in range(run.epoch + 1, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        model.train()
        started, sums = time.perf_counter(), torch.zeros(3, dtype=torch.float64)
        batches = prefetch_in_thread(loader) if num_workers == 0 else loader
        for pairs in batches:  # (B, 2, C, S, S)
            scheduler.step_update(run.step)
            sums += _train_step(trainer, optimizer, standardise, pairs, cfg, compute, run.step, epoch)
            run.step += 1
            progress.update()
        run.history.images_per_s.append(
            loader.batch_size * steps_per_epoch * context.world_size / (time.perf_counter() - started)
        )
        row = _epoch_row(sums, steps_per_epoch, optimizer, context)
        if context.is_main and cfg.knn_every_epochs and (epoch % cfg.knn_every_epochs == 0 or epoch == cfg.epochs):
            row["knn_acc"] = knn_accuracy(model.backbone, chips, cfg.knn_k, compute)
        run.epoch = epoch
        run.history.epochs.append({"epoch": epoch, **row})
        _log_row(live, run.history.epochs[-1])
        log.info("epoch %d/%d %s, %.1f images/s", epoch, cfg.epochs, {k: round(v, 4) for k, v in row.items()},
                 run.history.images_per_s[-1])
        if checkpoint_path is not None and context.is_main:
            _save_checkpoint(checkpoint_path, run, resume_key)
    progress.close()
    return run.history


def _make_loader(
    dataset: TwoViewDataset, batch_size: int, seed: int, num_workers: int, context: DistributedContext
) -> tuple[DataLoader, DistributedSampler]:
    """Each rank gets batch_size / world_size images per step from a (seed, epoch)-shuffled shard."""
    if batch_size % context.world_size:
        raise ValueError(
            f"simclr.batch_size ({batch_size}) must be divisible by the number of processes ({context.world_size})"
        )
    per_rank = min(batch_size // context.world_size, len(dataset) // context.world_size)
    if per_rank < 2:
        raise ValueError(f"SimCLR needs at least 2 training chips per process, the train split has {len(dataset)}")
    sampler = DistributedSampler(dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed)
    loader = DataLoader(
        dataset, batch_size=per_rank, sampler=sampler, drop_last=True,
        num_workers=num_workers, persistent_workers=num_workers > 0,
    )
    return loader, sampler


def _wrap_for_training(model: nn.Module, cfg: SimCLRConfig, compute: Compute, context: DistributedContext) -> nn.Module:
    """DDP (+ SyncBatchNorm on GPUs) under torchrun, optionally compiled; the bare model otherwise.

    PyTorch's SyncBatchNorm has no CPU kernel, so CPU ranks normalise over their own shard.
    """
    trainer = model
    if context.is_distributed:
        if cfg.sync_batchnorm and compute.device.type == "cuda":
            trainer = nn.SyncBatchNorm.convert_sync_batchnorm(trainer)
        device_ids = [compute.device.index] if compute.device.type == "cuda" else None
        trainer = DistributedDataParallel(trainer, device_ids=device_ids)
    return torch.compile(trainer) if compute.compile_model else trainer


def _train_step(
    trainer: nn.Module, optimizer: torch.optim.Optimizer, standardise: ChannelStandardiser, pairs: torch.Tensor,
    cfg: SimCLRConfig, compute: Compute, step: int, epoch: int,
) -> torch.Tensor:
    """One optimisation step on a (B, 2, C, S, S) batch; returns (loss, top1, embedding std) sums."""
    views = standardise(torch.cat([pairs[:, 0], pairs[:, 1]])).to(compute.device, non_blocking=True)
    with compute.autocast():
        _, projections = trainer(views)
    z_a, z_b = projections.float().chunk(2)
    out = nt_xent_distributed(z_a, z_b, cfg.temperature)
    if not torch.isfinite(out.loss):
        raise FloatingPointError(f"non-finite SimCLR loss at step {step} (epoch {epoch}); lower simclr.lr")
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if cfg.grad_clip_norm > 0:
        nn.utils.clip_grad_norm_(trainer.parameters(), cfg.grad_clip_norm)
    optimizer.step()
    with torch.no_grad():
        spread = F.normalize(projections.float(), dim=1).std(dim=0).mean()
        return torch.stack([out.loss.detach(), out.top1, spread]).double().cpu()


def _epoch_row(
    sums: torch.Tensor, steps: int, optimizer: torch.optim.Optimizer, context: DistributedContext
) -> dict[str, float]:
    """Epoch means over steps (and over ranks under torchrun) and the lr at the end of the epoch."""
    if context.is_distributed:
        dist.all_reduce(sums)
        sums /= context.world_size
    loss, top1, spread = (sums / max(steps, 1)).tolist()
    return {"loss": loss, "top1": top1, "embedding_std": spread, "lr": optimizer.param_groups[0]["lr"]}


def _log_row(live: Any | None, row: dict[str, float]) -> None:
    """One DVCLive step per epoch; epoch 0 carries only the untrained kNN baseline."""
    if live is None:
        return
    for key, value in row.items():
        if key != "epoch" and not math.isnan(value):
            live.log_metric(f"pretrain/{key}", value)
    live.next_step()


def _save_checkpoint(path: Path, run: _Run, resume_key: str) -> None:
    state = {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(), "epoch": run.epoch,
        "step": run.step, "history": run.history.epochs, "resume_key": resume_key,
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_file(path, "wb") as stream:
        torch.save(state, stream)


def _maybe_resume(run: _Run, path: Path, resume_key: str, epochs: int, device: torch.device) -> None:
    """Continue from an unfinished checkpoint of the same params; otherwise start afresh (and say why)."""
    if not path.exists():
        return
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # a torn or foreign file must not stop a fresh run
        log.warning("ignoring unreadable checkpoint %s: %s", path, str(error).splitlines()[0])
        return
    if state.get("resume_key") != resume_key:
        log.info("checkpoint %s belongs to other params; starting afresh", path)
        return
    if not 0 < state["epoch"] < epochs:
        log.info("checkpoint %s is a finished run (epoch %d); starting afresh", path, state["epoch"])
        return
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.epoch, run.step, run.history.epochs = state["epoch"], state["step"], state["history"]
    torch.set_rng_state(state["torch_rng"].cpu())
    log.info("resuming SimCLR from %s after epoch %d/%d", path, run.epoch, epochs)


def embedding_std_reference(dim: int) -> float:
    """Std of uniformly spread unit vectors per dimension (≈ 1/√D): the no-collapse reference."""
    return 1.0 / float(np.sqrt(dim))
