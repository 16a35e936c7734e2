"""The SimCLR training loop, readable in one sitting (docs/background.md §1).

Both views go through the encoder in one forward pass (BatchNorm sees them together), the loss is
NT-Xent in fp32 (negatives gathered from every rank under torchrun), the learning rate follows a linear
warmup then cosine (timm's scheduler), BN and bias parameters are excluded from weight decay (and from
LARS adaptation), gradients are clipped. Monitors per epoch: loss, contrastive top-1, lr, std of the
L2-normalised embeddings (→ 0 on collapse), and every few epochs a kNN
accuracy on the labelled validation chips, logged from step 0 so the untrained network's score is the
baseline SimCLR has to beat.

A checkpoint is written after every epoch (and every ``checkpoint_every_steps`` steps); a run with the
same params that finds an unfinished one continues from it, part-way through an epoch if need be, and
ends with the same weights and history as an uninterrupted run (views depend only on (seed, epoch,
chip), the sampler on (seed, epoch), the schedule on the step, and the epoch's running sums are saved).

A non-finite loss either stops the run with the step and the last good checkpoint named, or skips the
step (no update) by ``on_nonfinite_loss``; the skip is decided on all ranks together so DDP stays in step.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from pipeline.models.batchnorm import recalibrated_copy
from pipeline.models.freeze import freeze_early_stages, hold_frozen_batchnorm
from pipeline.models.heads import SimCLRModel
from pipeline.runtime import Compute
from pipeline.ssl.distributed import DistributedContext, nt_xent_distributed
from pipeline.training.optim import adamw
from pipeline.training.features import extract_features, knn_predict_proba

log = logging.getLogger(__name__)
STAT_COUNT = 4  # per-step sums: loss, contrastive top-1, embedding std, 1 (steps that updated)
MAX_CONSECUTIVE_SKIPS = 20  # weights that are already broken would otherwise skip forever


@dataclass
class PretrainHistory:
    """Per-epoch monitor values (epoch 0 = before training, kNN only)."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    images_per_s: list[float] = field(default_factory=list)  # per epoch; a timing, kept out of the outputs
    exported_epoch: int | None = None  # simclr.export best_knn: the epoch whose backbone the model now holds

    def last(self, key: str) -> float:
        values = [row[key] for row in self.epochs if key in row]
        return values[-1] if values else float("nan")


@dataclass
class _Run:
    """Everything one training run mutates, so a checkpoint can save and restore it as a whole."""

    model: SimCLRModel
    optimizer: torch.optim.Optimizer
    history: PretrainHistory
    epoch: int = 0  # last finished epoch
    step: int = 0  # optimisation steps taken (skipped ones included)
    epoch_sums: torch.Tensor = field(default_factory=lambda: torch.zeros(STAT_COUNT, dtype=torch.float64))
    skipped_steps: int = 0  # non-finite steps skipped in the epoch in progress
    checkpoint_step: int | None = None  # step of the last checkpoint written or resumed from
    best: dict | None = None  # simclr.export best_knn: {"epoch", "knn_acc", "backbone": state dict on CPU}

    def note_knn(self, epoch: int, accuracy: float, backbone: nn.Module) -> None:
        """Keep ``backbone`` (the weights as they would be exported) if its validation kNN accuracy is the best so
        far (the earliest on a tie). NaN (no labelled train or val chips) is never best, so an unlabelled set
        exports its last weights."""
        if accuracy != accuracy:
            return
        if self.best is None or accuracy > self.best["knn_acc"]:
            state = {key: value.detach().cpu().clone() for key, value in backbone.state_dict().items()}
            self.best = {"epoch": epoch, "knn_acc": accuracy, "backbone": state}


def build_optimizer(model: nn.Module, cfg: SimCLRConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (robust for small CPU batches) or LARS; 1-D params (BN, bias) get no decay / adaptation."""
    groups = param_groups_weight_decay(model, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lars":
        return Lars(groups, lr=cfg.lr, momentum=0.9)
    return adamw(groups, device, lr=cfg.lr)


def knn_accuracy(backbone: nn.Module, chips: ChipSet, k: int, compute: Compute = Compute(),
                 image_size: int | None = None) -> float:
    """kNN accuracy of frozen features (chips resized to ``image_size``, the views' size): labelled train chips
    vote for labelled val chips."""
    train, val = chips.indices("train", labelled=True), chips.indices("val", labelled=True)
    if len(train) == 0 or len(val) == 0:
        return float("nan")
    proba = knn_predict_proba(
        extract_features(backbone, chips, train, compute=compute, image_size=image_size),
        chips.labels[train],
        extract_features(backbone, chips, val, compute=compute, image_size=image_size),
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
    dataset = TwoViewDataset(chips, chips.indices("train"), augment_preset, cfg.image_size, seed, cfg.crop_scale)
    loader, sampler = _make_loader(dataset, cfg.batch_size, seed, num_workers, context)
    steps_per_epoch = len(loader)
    frozen = freeze_early_stages(model.backbone, cfg.freeze_stages)
    backbone_params = dict(model.backbone.named_parameters())
    optimizer = build_optimizer(model, cfg, compute.device)
    scheduler = CosineLRScheduler(
        optimizer, t_initial=cfg.epochs * steps_per_epoch, warmup_t=round(cfg.warmup_epochs * steps_per_epoch),
        warmup_lr_init=cfg.lr * 0.01, warmup_prefix=True, t_in_epochs=False,
    )
    run = _Run(model=model, optimizer=optimizer, history=PretrainHistory())
    model.to(compute.device, memory_format=torch.channels_last)
    if cfg.resume and checkpoint_path is not None:
        _maybe_resume(run, checkpoint_path, resume_key, cfg.epochs * steps_per_epoch, compute.device)
    if run.step == 0 and cfg.knn_every_epochs and context.is_main:  # not again when resuming mid-epoch 1
        run.history.epochs.append({"epoch": 0, "knn_acc": _monitor_knn(run, chips, cfg, compute, 0)})
    for row in run.history.epochs:
        _log_row(live, row)
    trainer = _wrap_for_training(model, cfg, compute, context)
    standardise = ChannelStandardiser(chips.mean, chips.std)
    progress = tqdm(total=cfg.epochs * steps_per_epoch, initial=run.step, desc="simclr", unit="step",
                    dynamic_ncols=True, disable=not context.is_main)
    save = _checkpointer(checkpoint_path, resume_key, context)
    for epoch in range(run.epoch + 1, cfg.epochs + 1):
        done_before = run.step - (epoch - 1) * steps_per_epoch  # > 0 only when resuming mid-epoch
        sampler.set_epoch(epoch)
        sampler.skip = done_before * loader.batch_size
        dataset.set_epoch(epoch)
        model.train()
        hold_frozen_batchnorm(model)
        started, consecutive_skips = time.perf_counter(), 0
        batches = prefetch_in_thread(loader) if num_workers == 0 else loader
        for pairs in batches:  # (B, 2, C, S, S)
            scheduler.step_update(run.step)
            stats = _train_step(trainer, optimizer, standardise, pairs, cfg, compute, context)
            consecutive_skips = 0 if stats is not None else consecutive_skips + 1
            if stats is None:
                _on_nonfinite(run, cfg, checkpoint_path, epoch, consecutive_skips)
            else:
                run.epoch_sums += stats
            run.step += 1
            progress.update()
            if cfg.checkpoint_every_steps and run.step % cfg.checkpoint_every_steps == 0 \
                    and run.step < epoch * steps_per_epoch:
                save(run)
        sampler.skip = 0
        run.history.images_per_s.append(
            loader.batch_size * (steps_per_epoch - done_before) * context.world_size / (time.perf_counter() - started)
        )
        row = _epoch_row(run.epoch_sums, optimizer, context)
        if run.skipped_steps:
            row["skipped_steps"] = float(run.skipped_steps)
        run.epoch_sums, run.skipped_steps = torch.zeros_like(run.epoch_sums), 0
        if context.is_main and cfg.knn_every_epochs and (epoch % cfg.knn_every_epochs == 0 or epoch == cfg.epochs):
            row["knn_acc"] = _monitor_knn(run, chips, cfg, compute, epoch)
        run.epoch = epoch
        run.history.epochs.append({"epoch": epoch, **row})
        _log_row(live, run.history.epochs[-1])
        log.info("epoch %d/%d %s, %.1f images/s", epoch, cfg.epochs, {k: round(v, 4) for k, v in row.items()},
                 run.history.images_per_s[-1])
        save(run)
    progress.close()
    for name in frozen:  # the caller gets the backbone back whole (fine-tuning trains every layer)
        backbone_params[name].requires_grad_(True)
    if context.is_main:
        _load_export(run, chips, cfg, compute)
    return run.history


def _monitor_knn(run: _Run, chips: ChipSet, cfg: SimCLRConfig, compute: Compute, epoch: int) -> float:
    """Validation kNN accuracy of the weights as they would be exported now; the best are kept (best_knn).
    Epoch 0 is the starting weights exactly as they came (the baseline init itself, never recalibrated), so
    ``best_knn`` can always fall back to them."""
    exported = run.model.backbone if epoch == 0 else _as_exported(run.model.backbone, chips, cfg, compute)
    accuracy = knn_accuracy(exported, chips, cfg.knn_k, compute, cfg.image_size)
    run.note_knn(epoch, accuracy, exported)
    return accuracy


def _load_export(run: _Run, chips: ChipSet, cfg: SimCLRConfig, compute: Compute) -> None:
    """Put the weights the stage exports into the model: the best kNN epoch's, or the last (recalibrated)."""
    if cfg.export == "best_knn" and run.best is not None:
        run.history.exported_epoch = run.best["epoch"]
        run.model.backbone.load_state_dict(run.best["backbone"])
    elif cfg.recalibrate_batchnorm:
        run.model.backbone.load_state_dict(_as_exported(run.model.backbone, chips, cfg, compute).state_dict())


def _as_exported(backbone: nn.Module, chips: ChipSet, cfg: SimCLRConfig, compute: Compute) -> nn.Module:
    """The backbone as the stage would export it now: with ``recalibrate_batchnorm``, a copy whose BatchNorm
    statistics come from the clean training chips; otherwise the backbone itself."""
    if not cfg.recalibrate_batchnorm:
        return backbone
    return recalibrated_copy(backbone, chips, chips.indices("train"), compute, cfg.image_size)


class _ResumableSampler(DistributedSampler):
    """A DistributedSampler whose epoch can start ``skip`` samples in, to resume a mid-epoch checkpoint."""

    skip: int = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return super().__len__() - self.skip


def _checkpointer(path: Path | None, resume_key: str, context: DistributedContext):
    """Rank 0 writes the checkpoint; other ranks (and runs without a path) only note the step."""
    def save(run: _Run) -> None:
        if path is not None and context.is_main:
            _save_checkpoint(path, run, resume_key)
        run.checkpoint_step = run.step
    return save


def _on_nonfinite(run: _Run, cfg: SimCLRConfig, path: Path | None, epoch: int, consecutive: int) -> None:
    """Apply ``simclr.on_nonfinite_loss`` to a step whose loss was NaN/inf (on any rank)."""
    where = f"non-finite SimCLR loss at step {run.step} (epoch {epoch})"
    last_good = (f"last good checkpoint: {path} (step {run.checkpoint_step})"
                 if path is not None and run.checkpoint_step is not None else "no checkpoint written yet")
    if cfg.on_nonfinite_loss == "stop":
        raise FloatingPointError(f"{where}; {last_good}; lower simclr.lr or set simclr.on_nonfinite_loss: skip")
    if consecutive > MAX_CONSECUTIVE_SKIPS:
        raise FloatingPointError(f"{where}: {consecutive} non-finite steps in a row, the weights are broken; "
                                 f"{last_good}; lower simclr.lr")
    run.skipped_steps += 1
    log.warning("%s: step skipped (simclr.on_nonfinite_loss: skip)", where)


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
    sampler = _ResumableSampler(dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed)
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
    cfg: SimCLRConfig, compute: Compute, context: DistributedContext,
) -> torch.Tensor | None:
    """One optimisation step on a (B, 2, C, S, S) batch; (loss, top1, embedding std, 1), or None if not finite."""
    views = standardise(torch.cat([pairs[:, 0], pairs[:, 1]])).to(compute.device, non_blocking=True)
    with compute.autocast():
        _, projections = trainer(views)
    z_a, z_b = projections.float().chunk(2)
    out = nt_xent_distributed(z_a, z_b, cfg.temperature)
    if not _finite_on_every_rank(out.loss, context):
        return None
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if cfg.grad_clip_norm > 0:
        nn.utils.clip_grad_norm_(trainer.parameters(), cfg.grad_clip_norm)
    optimizer.step()
    with torch.no_grad():
        spread = F.normalize(projections.float(), dim=1).std(dim=0).mean()
        return torch.stack([out.loss.detach(), out.top1, spread, torch.ones_like(spread)]).double().cpu()


def _finite_on_every_rank(loss: torch.Tensor, context: DistributedContext) -> bool:
    """Whether every rank's loss is finite: all ranks must agree to step or skip, or DDP would hang."""
    finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
    if context.is_distributed:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def _epoch_row(sums: torch.Tensor, optimizer: torch.optim.Optimizer, context: DistributedContext) -> dict[str, float]:
    """Epoch means over the steps that updated (and over ranks under torchrun); the lr at the epoch's end."""
    sums = sums.clone()
    if context.is_distributed:
        dist.all_reduce(sums)
    loss, top1, spread = (sums[:3] / max(float(sums[3]), 1.0)).tolist()
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
        "epoch_sums": run.epoch_sums, "skipped_steps": run.skipped_steps, "torch_rng": torch.get_rng_state(),
        "best": run.best,
    }
    with atomic_file(path, "wb") as stream:
        torch.save(state, stream)


def _maybe_resume(run: _Run, path: Path, resume_key: str, total_steps: int, device: torch.device) -> None:
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
    if not 0 < state["step"] < total_steps:
        log.info("checkpoint %s is a finished run (step %d); starting afresh", path, state["step"])
        return
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.epoch, run.step, run.history.epochs = state["epoch"], state["step"], state["history"]
    run.epoch_sums, run.skipped_steps = state["epoch_sums"].cpu(), state["skipped_steps"]
    run.best = state.get("best")
    if run.best is not None:
        run.best["backbone"] = {key: value.cpu() for key, value in run.best["backbone"].items()}
    run.checkpoint_step = run.step
    torch.set_rng_state(state["torch_rng"].cpu())
    log.info("resuming SimCLR from %s at step %d/%d (after epoch %d)", path, run.step, total_steps, run.epoch)
