"""The transfer engine: fine-tune any task by the shared protocol (:mod:`.loop`) and predict chips in batches.

A task (:class:`TransferTask`) contributes only what differs: the model it builds around the backbone, which of
its parameters are new, its training batches (its augmentation), its loss, what it predicts from a batch of
chips and its validation metric. Seeding, the optimiser with a lower lr for transferred weights, the schedule,
validation-based stopping and the batched, resized, standardised prediction loop are the engine's, once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from pipeline.config import TransferTraining
from pipeline.data.chips import ChipSet
from pipeline.data.datasets import ChannelStandardiser, resize_batch
from pipeline.runtime import Compute
from pipeline.training.optim import transfer_optimizer
from pipeline.transfer.loop import plan_schedule, train_with_validation


class TransferTask(ABC):
    """One downstream task on the shared backbone. Subclasses set :attr:`new_lr_multiplier` (new layers train
    at ``lr ×`` it) and may set :attr:`channels_last` (False where a model re-batches images itself)."""

    new_lr_multiplier: float = 1.0
    channels_last: bool = True
    start_is_candidate: bool = False  # the untrained start is a meaningful model (an LP-FT head)

    @abstractmethod
    def build(self, backbone: nn.Module) -> nn.Module:
        """The task's model, with the backbone's weights where they fit."""

    @abstractmethod
    def parameter_groups(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(transferred, new) parameters: the backbone's at ``lr``, the task's new layers at the multiplier."""

    @abstractmethod
    def batches(self, train: np.ndarray, seed: int) -> Iterator[object]:
        """Endless augmented training batches of ``train`` chips, fixed by ``seed``."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: object) -> torch.Tensor:
        """The training loss of one batch (fp32)."""

    @abstractmethod
    def predict(self, model: nn.Module, indices: np.ndarray) -> object:
        """The task's predictions for ``indices`` (by :func:`predict_in_batches`)."""

    @abstractmethod
    def validation_score(self, val: np.ndarray, predicted: object) -> float:
        """The primary metric on the validation chips; higher is better."""

    def gain_over_start_rule(self) -> Callable[[], bool] | None:
        """With :attr:`start_is_candidate`: a callable saying whether the last validation's gain over the start is
        beyond noise (asked at each new best after the start); None = any gain counts."""
        return None


def fine_tune(task: TransferTask, backbone: nn.Module, train: np.ndarray, val: np.ndarray, cfg: TransferTraining,
              seed: int, compute: Compute = Compute()) -> tuple[nn.Module, dict]:
    """Build the task's model on ``backbone`` and train it on ``train`` chips by the shared protocol, keeping the
    best weights on ``val``; returns the model and the training record. Every random draw (new layers' init,
    batches, augmentation, dropout) follows from ``seed``, so a run is reproducible on CPU."""
    torch.manual_seed(seed)
    model = task.build(backbone)
    model = model.to(compute.device, memory_format=torch.channels_last if task.channels_last else torch.preserve_format)
    transferred, new = task.parameter_groups(model)
    optimizer = transfer_optimizer(transferred, new, cfg.lr, task.new_lr_multiplier, cfg.weight_decay, compute.device)

    def validate() -> float:
        return task.validation_score(val, task.predict(model, val))

    record = train_with_validation(model, optimizer, plan_schedule(len(train), cfg), task.batches(train, seed),
                                   lambda batch: task.loss(model, batch), validate if len(val) else None,
                                   cfg.freeze_pretrained_batchnorm, validate_start=task.start_is_candidate,
                                   prefetch=compute.device.type != "cpu", gain_over_start_trusted=task.gain_over_start_rule())
    return model, record


@torch.no_grad()
def predict_in_batches(model: nn.Module, chips: ChipSet, indices: np.ndarray, forward: Callable[[torch.Tensor], object],
                       finish: Callable[[object], object], compute: Compute = Compute(), batch_size: int = 64,
                       image_size: int | None = None) -> list:
    """``finish(forward(images))`` per batch of chips in eval mode, ``forward`` under the compute's autocast
    (``finish`` in fp32): chips read from the cache, resized to ``image_size`` (None = as cached) and standardised
    by the cache's channel statistics. Returns the per-batch results in order."""
    model.eval()
    standardise = ChannelStandardiser(chips.mean, chips.std)
    out = []
    for start in range(0, len(indices), batch_size):
        images = torch.from_numpy(np.asarray(chips.images[indices[start : start + batch_size]], dtype=np.float32))
        images = standardise(resize_batch(images, image_size)).to(compute.device)
        with compute.autocast():
            raw = forward(images)
        out.append(finish(raw))
    return out
