"""Data-parallel SimCLR under torchrun: the process group, and NT-Xent with negatives from every rank.

Launching is torchrun's job (``torchrun --nproc_per_node=N -m stages.pretrain ...``); this module only
reads the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK). Without it everything runs as a
single process and none of the collective calls happen.

The distributed loss follows docs/background.md §1: every rank's projections are gathered **with gradient**
(``torch.distributed.nn.functional.all_gather``, whose backward sums each rank's gradient back to the
owner), and each rank scores only its own anchors against the gathered keys. Each rank's loss is scaled
by its share of the global anchors × world size, so that after DDP averages the gradients they equal the
gradient of the global mean loss — also when the ranks hold different numbers of images (an uneven last
batch), for which the gathered keys are padded to a common length and the padding is cut off again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.nn.functional import all_gather as all_gather_with_grad

from pipeline.ssl.loss import NTXentOutput, _check_views, nt_xent, nt_xent_from_keys


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job; the single-process default needs no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only rank 0 logs, checkpoints and writes stage outputs."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group torchrun describes in the environment, or run alone when it does not.

    NCCL for CUDA devices, gloo otherwise (CPU, tests). Safe to call when a group already exists.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistributedContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_rows_with_grad(rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate every rank's (n_r, D) rows in rank order, gradient flowing back to each owner.

    Returns the (Σ n_r, D) matrix and the row offset of this rank's block in it. Ranks may hold
    different n_r: blocks are padded to the largest for the collective and trimmed afterwards.
    """
    counts = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([rows.shape[0]], dtype=torch.long, device=rows.device))
    sizes = [int(count.item()) for count in counts]
    padded = F.pad(rows, (0, 0, 0, max(sizes) - rows.shape[0]))
    blocks = all_gather_with_grad(padded)
    gathered = torch.cat([block[:size] for block, size in zip(blocks, sizes)])
    return gathered, sum(sizes[: dist.get_rank()])


def nt_xent_distributed(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> NTXentOutput:
    """NT-Xent over the global batch of all ranks; falls back to :func:`nt_xent` without a process group.

    The returned loss is this rank's contribution, scaled for DDP's gradient averaging (see the module
    docstring); ``top1`` is this rank's anchors' contrastive accuracy against all global keys.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return nt_xent(z_a, z_b, temperature)
    _check_views(z_a, z_b)
    n = z_a.shape[0]
    local = F.normalize(torch.cat([z_a.float(), z_b.float()]), dim=1)  # (2n, D): [a_0..a_n-1, b_0..b_n-1]
    keys, offset = gather_rows_with_grad(local)  # each rank's block keeps that layout
    local_index = torch.arange(2 * n, device=local.device)
    self_index = offset + local_index
    positive_index = offset + (local_index + n) % (2 * n)
    out = nt_xent_from_keys(local, keys, positive_index, self_index, temperature)
    share = 2 * n * dist.get_world_size() / keys.shape[0]  # = 1 when every rank holds the same n
    return NTXentOutput(loss=out.loss * share, top1=out.top1)
