"""BatchNorm statistics re-estimated on clean domain images.

SimCLR trains on heavily augmented views (crops, colour jitter, blur), so the running statistics its BatchNorm
layers end with describe those views, not the clean chips a linear probe or kNN later sees. One pass over the
clean training chips, averaging every batch equally (``momentum=None``), replaces them with the domain's own
(the idea of AdaBN, Li et al. 2016). Weights are untouched.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from pipeline.data.chips import ChipSet
from pipeline.data.datasets import ChannelStandardiser, ChipDataset, resize_batch
from pipeline.runtime import Compute


def recalibrated_copy(backbone: nn.Module, chips: ChipSet, indices: np.ndarray, compute: Compute = Compute(),
                      image_size: int | None = None, batch_size: int = 256) -> nn.Module:
    """A copy of ``backbone`` whose BatchNorm running statistics are the average over ``indices``' clean chips
    (resized to ``image_size``, the views' size), by torch's own ``update_bn`` (``momentum=None``). The copy is
    plain BatchNorm even when the original was converted to SyncBatchNorm, so only the calling rank takes part."""
    copied = _plain_batchnorm(copy.deepcopy(backbone)).to(compute.device)
    if not _batchnorms(copied) or len(indices) == 0:
        return copied.eval()
    standardise = ChannelStandardiser(chips.mean, chips.std)
    # its own generator: the loader draws a seed, which must not shift the training run's random stream
    loader = DataLoader(ChipDataset(chips, indices), batch_size=batch_size, shuffle=False, generator=torch.Generator())
    update_bn((standardise(resize_batch(images, image_size)) for images, _ in loader), copied, compute.device)
    return copied.eval()


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _plain_batchnorm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm → BatchNorm2d in place (same parameters and buffers); other modules unchanged."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            plain = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            plain.load_state_dict(child.state_dict())
            plain.train(child.training)
            setattr(module, name, plain.to(next(child.buffers()).device))
        else:
            _plain_batchnorm(child)
    return module
