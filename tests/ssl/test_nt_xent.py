"""NT-Xent against independent references: the paper's formula in float64, and lightly's loss."""

from __future__ import annotations

import pytest
import torch

from pipeline.ssl.loss import nt_xent, nt_xent_from_keys

BATCH_SIZES = (1, 2, 7, 32)
TEMPERATURES = (0.05, 0.1, 0.5, 1.0)
DIM = 16


def _views(n: int, seed: int = 0, dim: int = DIM) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (n, dim) fp32 leaf tensors; view b is a noisy copy of view a, as augmented views are."""
    generator = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, dim, generator=generator)
    z_b = z_a + 1.5 * torch.randn(n, dim, generator=generator)
    return z_a.requires_grad_(), z_b.requires_grad_()


def _naive_nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """ℓ(i) = −log(exp(sim(z_i, z_i')/τ) / Σ_{k≠i} exp(sim(z_i, z_k)/τ)), one anchor at a time, float64."""
    z = list(z_a.double()) + list(z_b.double())
    n = z_a.shape[0]

    def sim(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).sum() / (u.pow(2).sum().sqrt() * v.pow(2).sum().sqrt())

    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        numerator = torch.exp(sim(z[i], z[positive]) / temperature)
        denominator = sum(torch.exp(sim(z[i], z[k]) / temperature) for k in range(2 * n) if k != i)
        losses.append(-torch.log(numerator / denominator))
    return torch.stack(losses).mean()


def _loss_and_grads(loss_fn, z_a: torch.Tensor, z_b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    loss = loss_fn(z_a, z_b)
    grad_a, grad_b = torch.autograd.grad(loss, (z_a, z_b))
    return loss.detach(), grad_a, grad_b


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float = 0.0) -> None:
    """Relative tolerance, with an absolute floor scaled to the tensor's largest entry (for entries near 0)."""
    expected = expected.to(actual.dtype)
    floor = max(atol, rtol * float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=floor)


def _assert_loss_and_grads_close(actual: tuple, expected: tuple, z: torch.Tensor, temperature: float) -> None:
    """1e-5 relative, with an absolute floor of a few fp32 ulps at the scale of the computation.

    Logits reach 1/τ, so fp32 log-sum-exp is exact to ~eps/τ and a gradient to ~eps/(τ·‖z‖). A nearly
    separated small batch has a loss of ~1e-9 (and gradients of ~1e-8) that only this floor can judge.
    """
    eps = torch.finfo(torch.float32).eps
    min_norm = float(z.detach().norm(dim=1).min())
    _assert_close(actual[0], expected[0], rtol=1e-5, atol=4 * eps / temperature)
    for got, want in zip(actual[1:], expected[1:]):
        _assert_close(got, want, rtol=1e-5, atol=4 * eps / (temperature * min_norm))


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("n", BATCH_SIZES)
def test_matches_naive_formula_loss_and_gradients(n: int, temperature: float) -> None:
    z_a, z_b = _views(n, seed=n)
    ours = _loss_and_grads(lambda a, b: nt_xent(a, b, temperature).loss, z_a, z_b)
    naive = _loss_and_grads(lambda a, b: _naive_nt_xent(a, b, temperature), z_a, z_b)
    assert ours[0].dtype == torch.float32
    _assert_loss_and_grads_close(ours, naive, torch.cat([z_a, z_b]), temperature)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("n", BATCH_SIZES)
def test_matches_lightly_loss_and_gradients(n: int, temperature: float) -> None:
    lightly_loss = pytest.importorskip("lightly.loss")
    reference = lightly_loss.NTXentLoss(temperature=temperature)
    z_a, z_b = _views(n, seed=100 + n)
    ours = _loss_and_grads(lambda a, b: nt_xent(a, b, temperature).loss, z_a, z_b)
    theirs = _loss_and_grads(reference, z_a, z_b)
    _assert_loss_and_grads_close(ours, theirs, torch.cat([z_a, z_b]), temperature)


def test_single_image_batch_is_zero_loss_without_nans() -> None:
    """N = 1 has no negatives: ℓ = −log 1 = 0, zero (finite) gradient, trivially correct top-1."""
    z_a, z_b = _views(1)
    out = nt_xent(z_a, z_b, 0.1)
    grad_a, grad_b = torch.autograd.grad(out.loss, (z_a, z_b))
    assert out.loss.item() == 0.0
    assert torch.equal(grad_a, torch.zeros_like(grad_a)) and torch.equal(grad_b, torch.zeros_like(grad_b))
    assert out.top1.item() == 1.0


def test_top1_is_one_for_identical_well_separated_views() -> None:
    q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(0)))
    z = q[:10]  # orthonormal rows: every other key has similarity 0, the positive has 1
    out = nt_xent(z, z.clone(), 0.1)
    assert out.top1.item() == 1.0
    assert not out.top1.requires_grad


def test_top1_is_near_chance_for_unrelated_views() -> None:
    generator = torch.Generator().manual_seed(1)
    n = 256
    z_a, z_b = torch.randn(n, 64, generator=generator), torch.randn(n, 64, generator=generator)
    top1 = nt_xent(z_a, z_b, 0.1).top1.item()
    assert top1 < 10 / (2 * n - 1)  # chance is 1 / (2N − 1) ≈ 0.002


def test_bf16_inputs_give_fp32_loss_close_to_fp32() -> None:
    z_a, z_b = _views(32)
    reference = nt_xent(z_a, z_b, 0.1).loss
    out = nt_xent(z_a.bfloat16(), z_b.bfloat16(), 0.1)
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, reference, rtol=1e-2, atol=0.0)
    # The rounding of the inputs is the only difference: the computation itself is fp32.
    exact = nt_xent(z_a.bfloat16().float(), z_b.bfloat16().float(), 0.1).loss
    torch.testing.assert_close(out.loss, exact, rtol=1e-6, atol=0.0)


def test_bf16_autocast_region_keeps_fp32_logits() -> None:
    z_a, z_b = _views(32)
    reference = nt_xent(z_a, z_b, 0.05).loss
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inside = nt_xent(z_a, z_b, 0.05).loss
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, reference, rtol=1e-6, atol=0.0)


def test_permuting_images_in_both_views_leaves_loss_unchanged() -> None:
    z_a, z_b = _views(7)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(3))
    out = nt_xent(z_a, z_b, 0.2)
    permuted = nt_xent(z_a[perm], z_b[perm], 0.2)
    torch.testing.assert_close(permuted.loss, out.loss, rtol=1e-6, atol=0.0)
    assert permuted.top1.item() == out.top1.item()


def test_swapping_views_leaves_loss_unchanged() -> None:
    z_a, z_b = _views(7)
    torch.testing.assert_close(nt_xent(z_b, z_a, 0.2).loss, nt_xent(z_a, z_b, 0.2).loss, rtol=1e-6, atol=0.0)


def test_anchors_split_across_shards_average_to_full_loss() -> None:
    """What a distributed caller does: each shard scores its own anchors against all keys."""
    n, temperature = 8, 0.1
    z_a, z_b = _views(n)
    full = nt_xent(z_a, z_b, temperature)
    keys = torch.nn.functional.normalize(torch.cat([z_a, z_b]), dim=1)
    positive = (torch.arange(2 * n) + n) % (2 * n)
    shards = [torch.arange(0, n), torch.arange(n, 2 * n)]  # equal-sized shards of anchors
    parts = [nt_xent_from_keys(keys[rows], keys, positive[rows], rows, temperature) for rows in shards]
    torch.testing.assert_close(torch.stack([p.loss for p in parts]).mean(), full.loss, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(torch.stack([p.top1 for p in parts]).mean(), full.top1)


@pytest.mark.parametrize(
    ("shape_a", "shape_b"), [((4, 8), (5, 8)), ((4, 8), (4, 9)), ((8,), (8,)), ((0, 8), (0, 8))]
)
def test_rejects_bad_shapes(shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="nt_xent needs"):
        nt_xent(torch.randn(shape_a), torch.randn(shape_b), 0.1)


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan"), float("inf")])
def test_rejects_non_positive_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(4, 8), torch.randn(4, 8), temperature)


def test_rejects_mismatched_indices() -> None:
    keys = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    with pytest.raises(ValueError, match="positive_index"):
        nt_xent_from_keys(keys[:3], keys, torch.tensor([3, 4]), torch.arange(3), 0.1)
    with pytest.raises(ValueError, match="self_index"):
        nt_xent_from_keys(keys[:3], keys, torch.tensor([3, 4, 5]), torch.arange(3).int(), 0.1)
