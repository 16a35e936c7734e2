"""The optimiser and schedule every transfer task (classification, segmentation, detection) shares."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from timm.scheduler import CosineLRScheduler


def adamw(groups: list[dict], device: torch.device, **kwargs) -> torch.optim.AdamW:
    """AdamW with the fused kernel where PyTorch has one (CPU, CUDA): on the 2-core demo CPU it takes a
    fine-tuning step from 95 to 86 ms (tf_efficientnet_lite0, 64 px, batch 16), the optimiser part 3× faster."""
    return torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda"), **kwargs)


def transfer_optimizer(
    pretrained: Iterable[torch.nn.Parameter], new: Iterable[torch.nn.Parameter], lr: float,
    new_lr_multiplier: float, weight_decay: float, steps: int, device: torch.device,
) -> tuple[torch.optim.AdamW, CosineLRScheduler]:
    """Transferred weights at ``lr``, freshly initialised layers (head, decoder) at ``lr × new_lr_multiplier``
    (a new layer must move further than pretrained weights); 10 % linear warm-up, then cosine decay per step."""
    optimizer = adamw([{"params": list(pretrained), "lr": lr}, {"params": list(new), "lr": lr * new_lr_multiplier}],
                      device, weight_decay=weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=steps, warmup_t=max(1, steps // 10), t_in_epochs=False)
    return optimizer, scheduler
