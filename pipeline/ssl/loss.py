"""NT-Xent, the SimCLR contrastive loss (docs/background.md §1).

For a batch of N images seen through two augmentations there are 2N projections z. With cosine
similarity sim(u, v) = uᵀv / (‖u‖‖v‖) and temperature τ, the loss of anchor i whose positive is i' is

    ℓ(i) = −log( exp(sim(z_i, z_i') / τ) / Σ_{k≠i} exp(sim(z_i, z_k) / τ) ),

averaged over all 2N anchors: one positive and 2N − 2 negatives each, self-similarity excluded.

It is computed as a cross-entropy over a (2N, 2N) logit matrix whose diagonal is −inf, in fp32, so
the log-sum-exp is stable and bf16 projections from an autocast forward pass are safe. The core,
:func:`nt_xent_from_keys`, scores M local anchors against K keys, so a distributed version can pass
keys gathered (with gradient) from every rank and reuse it unchanged.

N = 1 is degenerate (no negatives): every anchor's only candidate is its positive, so the formula gives
ℓ = −log 1 = 0 with zero gradient and top-1 = 1. That value is returned, as lightly's ``NTXentLoss``
does, rather than raising, so a trailing batch of one image is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class NTXentOutput:
    """Result of one NT-Xent evaluation.

    Attributes:
        loss: scalar fp32, mean of ℓ over the anchors (all 2N of them for :func:`nt_xent`).
        top1: scalar fp32 without gradient, the fraction of anchors whose positive has the highest
            logit (contrastive accuracy; chance is 1 / (K − 1)).
    """

    loss: torch.Tensor
    top1: torch.Tensor


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> NTXentOutput:
    """NT-Xent over the 2N views of one batch; row i of ``z_a`` and ``z_b`` is the same image.

    Args:
        z_a: (N, D) projections of view a, any float dtype (cast to fp32 here).
        z_b: (N, D) projections of view b.
        temperature: τ > 0; the logits are cosine similarities divided by τ.

    Returns:
        :class:`NTXentOutput` with the mean loss over the 2N anchors and the contrastive top-1.

    Raises:
        ValueError: if the views are not matching non-empty (N, D) matrices or τ is not positive.
    """
    _check_views(z_a, z_b)
    _check_temperature(temperature)
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a.float(), z_b.float()]), dim=1)  # (2N, D)
    self_index = torch.arange(2 * n, device=z.device)
    positive_index = (self_index + n) % (2 * n)  # i ↔ i + N
    return nt_xent_from_keys(z, z, positive_index, self_index, temperature)


def nt_xent_from_keys(
    queries: torch.Tensor,
    keys: torch.Tensor,
    positive_index: torch.Tensor,
    self_index: torch.Tensor,
    temperature: float,
) -> NTXentOutput:
    """NT-Xent of M anchors against K keys: the core shared by the local and distributed losses.

    Under data parallelism each rank passes its own anchors as ``queries`` and the keys gathered
    from every rank (with gradient) as ``keys``; the indices then point into the gathered matrix.
    The loss is the mean over the M local anchors, so ranks with equal M average to the global mean.

    Args:
        queries: (M, D) L2-normalised anchor projections.
        keys: (K, D) L2-normalised projections of every view in the (global) batch, anchors included.
        positive_index: (M,) long, row of ``keys`` holding each anchor's positive.
        self_index: (M,) long, row of ``keys`` holding the anchor itself (masked out).
        temperature: τ > 0.

    Returns:
        :class:`NTXentOutput`; loss and top-1 are fp32 scalars.

    Raises:
        ValueError: on mismatched shapes, non-integer indices or τ ≤ 0.
    """
    _check_keys(queries, keys, positive_index, self_index)
    _check_temperature(temperature)
    # Autocast would run the matmul in bf16 again even on fp32 inputs: keep the logits in fp32.
    with torch.autocast(device_type=queries.device.type, enabled=False):
        logits = queries.float() @ keys.float().T / temperature  # (M, K)
        is_self = torch.zeros_like(logits, dtype=torch.bool)
        is_self[torch.arange(len(self_index), device=logits.device), self_index] = True
        # masked_fill's backward zeroes the masked entries, so −inf leaves every gradient finite.
        logits = logits.masked_fill(is_self, float("-inf"))
        loss = F.cross_entropy(logits, positive_index)
    with torch.no_grad():
        top1 = (logits.argmax(dim=1) == positive_index).float().mean()
    return NTXentOutput(loss=loss, top1=top1)


def _check_views(z_a: torch.Tensor, z_b: torch.Tensor) -> None:
    """Both views must be the same non-empty (N, D) shape."""
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"nt_xent needs two (N, D) views of the same shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    if z_a.shape[0] == 0 or z_a.shape[1] == 0:
        raise ValueError(f"nt_xent needs at least one image and one feature, got shape {tuple(z_a.shape)}")


def _check_keys(
    queries: torch.Tensor, keys: torch.Tensor, positive_index: torch.Tensor, self_index: torch.Tensor
) -> None:
    """Shape and dtype checks that need no device synchronisation."""
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"queries (M, D) and keys (K, D) must share D, got {tuple(queries.shape)} and {tuple(keys.shape)}"
        )
    expected = (queries.shape[0],)
    for name, index in (("positive_index", positive_index), ("self_index", self_index)):
        if tuple(index.shape) != expected:
            raise ValueError(f"{name} must have shape {expected} (one per query), got {tuple(index.shape)}")
        if index.dtype != torch.long:
            raise ValueError(f"{name} must be torch.long, got {index.dtype}")


def _check_temperature(temperature: float) -> None:
    """τ must be a finite positive number: it divides every logit."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
