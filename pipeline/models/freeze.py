"""Freezing a backbone's first stages for continued pretraining.

Continued SimCLR from ImageNet weights on a few hundred domain images can wash out the generic low-level filters
(edges, blobs) that transfer to every domain, while the later stages are the ones that need to adapt. Freezing
the stem and the first ``stages`` feature stages keeps them — weights and BatchNorm statistics — exactly as
they started, and saves their backward pass. Stages are timm's ``feature_info`` stages, so the same count
means the same depth (output stride 2, 4, 8, ...) for every timm backbone.
"""

from __future__ import annotations

from torch import nn


def early_stage_parameters(backbone: nn.Module, stages: int) -> list[str]:
    """Names of the parameters that come before the backbone's feature stage ``stages + 1`` (the stem included)."""
    if stages == 0:
        return []
    info = getattr(backbone, "feature_info", None)
    if info is None:
        raise ValueError("simclr.freeze_stages: this backbone has no timm feature_info to count stages by")
    modules = [entry["module"] for entry in info]
    if not 0 < stages < len(modules):
        raise ValueError(f"simclr.freeze_stages must be between 0 and {len(modules) - 1} for this backbone "
                         f"({len(modules)} feature stages), got {stages}")
    names = [name for name, _ in backbone.named_parameters()]
    boundary = modules[stages]  # the first stage that keeps training
    first_trained = next(i for i, name in enumerate(names) if name == boundary or name.startswith(boundary + "."))
    return names[:first_trained]


def freeze_early_stages(backbone: nn.Module, stages: int) -> list[str]:
    """Stop gradients to the stem and the first ``stages`` stages; returns the frozen parameter names."""
    frozen = early_stage_parameters(backbone, stages)
    by_name = dict(backbone.named_parameters())
    for name in frozen:
        by_name[name].requires_grad_(False)
    return frozen


def hold_frozen_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm whose affine parameters are all frozen in eval mode, so ``model.train()`` does not let
    the domain's batches move the running statistics of layers that are meant to stay as they started."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
