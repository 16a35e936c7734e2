"""The one training protocol every transfer task shares: a schedule sized by the data, validation-based
stopping with the best weights kept, and batches prepared in a background thread.

A fixed step count is a time budget, not a protocol: 30 steps are two epochs of a 1 % subset and a tenth of an
epoch of a full one, so the same number says nothing comparable about initialisations. Here the count comes
from epochs over the labelled subset (with a floor for tiny subsets); the validation split picks the weights
and decides when to stop; the test split is never looked at during training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.config import TransferTraining
from pipeline.data.prefetch import prefetch_in_thread


@dataclass(frozen=True)
class Schedule:
    """Step counts of one fine-tune, derived from the labelled subset's size and the config."""

    steps: int
    steps_per_epoch: int
    warmup_steps: int
    validate_every: int  # steps between validations (the last step is always validated)
    patience: int  # validations without improvement before stopping; 0 = never stop early

    @property
    def epochs(self) -> float:
        return self.steps / self.steps_per_epoch


def plan_schedule(n_train: int, cfg: TransferTraining) -> Schedule:
    """``cfg.epochs`` passes over ``n_train`` items (at least ``cfg.min_steps`` updates) unless ``cfg.steps``
    is given; validation every ``validate_every_epochs``, spread out so it happens at most ``max_validations``
    times."""
    steps_per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    steps = cfg.steps or max(cfg.min_steps, math.ceil(cfg.epochs * steps_per_epoch))
    every = max(math.ceil(cfg.validate_every_epochs * steps_per_epoch), math.ceil(steps / cfg.max_validations))
    return Schedule(steps=steps, steps_per_epoch=steps_per_epoch, warmup_steps=round(cfg.warmup_fraction * steps),
                    validate_every=min(every, steps), patience=cfg.patience)


def learning_rate_at(step: int, schedule: Schedule) -> float:
    """Multiplier of each group's base lr: linear warm-up to 1, then cosine decay to 0 at the last step."""
    if step < schedule.warmup_steps:
        return (step + 1) / (schedule.warmup_steps + 1)
    span = max(1, schedule.steps - schedule.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * (step - schedule.warmup_steps) / span))


def pretrained_batchnorms(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers that arrive with learned statistics (running mean / variance not PyTorch's initial 0 / 1):
    those of a pretrained backbone, not those of a random init or of a freshly built decoder."""
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
            and module.track_running_stats and module.running_var is not None
            and not (torch.all(module.running_var == 1) and torch.all(module.running_mean == 0))]


def train_with_validation(
    model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Schedule, batches: Iterable[object],
    loss_of: Callable[[object], torch.Tensor], validate: Callable[[], float] | None,
    freeze_pretrained_batchnorm: bool = True, validate_start: bool = False, prefetch: bool = False,
    gain_over_start_trusted: Callable[[], bool] | None = None,
) -> dict:
    """Run ``schedule``: one optimiser step per prepared batch (prepared ahead in a thread), ``validate()``
    (higher is better, NaN counts as worst) every ``validate_every`` steps and after the last; keep the best
    weights, stop after ``patience`` validations without improvement, and load the best weights back. With
    ``validate_start`` the starting weights are scored too (a meaningful start: the LP-FT head), so a
    fine-tune that only degrades it ends where it started instead of worse; a random head or decoder is not a
    candidate (a lucky draw could win on a small validation split). ``gain_over_start_trusted``, asked right after
    each validation that sets a new best above the start, says whether that gain is larger than the validation
    split's noise; if the best checkpoint's gain is not trusted, the start is kept (LP-FT's one-standard-error
    rule: BUSI, 10 % labels, random init: a checkpoint 0.007 AUROC above its probe on 156 validation images
    scored 0.074 below it on the test split; docs/finetuning.md). An untrusted gain still counts as progress for
    ``patience``: the run goes on while it improves.

    With ``freeze_pretrained_batchnorm`` the BatchNorm layers that arrive with statistics keep them (eval mode;
    their scale and shift still train): batch statistics of small, augmented batches drift the running
    statistics away from what the pretrained weights expect, and the network scored in eval mode then differs
    from the one trained (PneumoniaMNIST, 10 % labels, ImageNet init, LP-FT: validation AUROC fell from the
    probe's 0.93 to 0.62 in the first 17 steps with them training, and rose to 0.97 with them frozen;
    docs/finetuning.md).

    ``prefetch`` prepares batches in a background thread: worth it when the model runs on a GPU; on a CPU the
    thread competes with the training threads for the cores and the interpreter lock (2-core Intel Xeon,
    EfficientNet-Lite0, 64 px, batch 32: 0.61× a bare loop on pre-made tensors with it, 0.92× without;
    ``bench/finetune_throughput.py``).

    Without a validation split (``validate`` None) the last weights are kept. Returns a record of what ran.
    """
    if not validate_start and schedule.validate_every >= schedule.steps:
        validate = None  # one validation, of the last weights, has nothing to choose between
    base = [group["lr"] for group in optimizer.param_groups]
    best, best_step, since_best, step, curve, best_trusted = -math.inf, 0, 0, 0, [], True
    best_state = start_state = None
    frozen = pretrained_batchnorms(model) if freeze_pretrained_batchnorm else []

    def train_mode() -> None:
        model.train()
        for module in frozen:
            module.eval()

    def checkpoint_if_best(at: int) -> bool:
        """Validate at step ``at``; keep the weights if they are the best so far. True when it is time to stop."""
        nonlocal best, best_step, since_best, best_state, best_trusted, start_state
        score = validate()
        train_mode()
        curve.append([at, round(score, 4)])
        if score > best:  # NaN is never better
            best, best_step, since_best = score, at, 0
            best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
            start_state = best_state if at == 0 else start_state
            best_trusted = at == 0 or start_state is None or gain_over_start_trusted is None or gain_over_start_trusted()
            return False
        since_best += 1
        return bool(schedule.patience) and since_best >= schedule.patience

    if validate is not None and validate_start:  # with LP-FT the start is the linear probe itself: a candidate
        checkpoint_if_best(0)
    train_mode()
    with closing(prefetch_in_thread(batches) if prefetch else (batch for batch in batches)) as ready:
        for step, batch in zip(range(1, schedule.steps + 1), ready):
            for group, lr in zip(optimizer.param_groups, base):
                group["lr"] = lr * learning_rate_at(step - 1, schedule)
            loss = loss_of(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if validate is None or (step % schedule.validate_every and step != schedule.steps):
                continue
            if checkpoint_if_best(step):
                break
    for group, lr in zip(optimizer.param_groups, base):
        group["lr"] = lr
    record = {"steps_planned": schedule.steps, "steps_run": step, "epochs_planned": round(schedule.epochs, 2),
              "best_step": step if best_state is None else best_step, "val_score": None if best_state is None else best,
              "stopped_early": step < schedule.steps, "val_curve": curve}
    if not best_trusted:  # the best checkpoint's gain over the start is within the validation split's noise
        best_state = start_state
        record.update(best_step=0, val_score=curve[0][1], start_kept_within_noise=True)
    if best_state is not None:
        model.load_state_dict(best_state)
    return record
