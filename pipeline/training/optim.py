"""The optimiser every training loop shares (SimCLR pretraining and the transfer tasks)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adamw(groups: list[dict], device: torch.device, **kwargs) -> torch.optim.AdamW:
    """AdamW with the fused kernel where PyTorch has one (CPU, CUDA): on the 2-core demo CPU it takes a
    fine-tuning step from 95 to 86 ms (tf_efficientnet_lite0, 64 px, batch 16), the optimiser part 3× faster."""
    return torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda"), **kwargs)


def transfer_optimizer(pretrained: Iterable[torch.nn.Parameter], new: Iterable[torch.nn.Parameter], lr: float,
                       new_lr_multiplier: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """Transferred weights at ``lr``, freshly initialised layers (head, decoder) at ``lr × new_lr_multiplier``:
    a new layer must move further than pretrained weights, which a high lr would wreck."""
    groups = [{"params": list(pretrained), "lr": lr}, {"params": list(new), "lr": lr * new_lr_multiplier}]
    return adamw(groups, device, weight_decay=weight_decay)
