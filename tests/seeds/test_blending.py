"""Blend operators: exact identity at alpha 0, gate learning, straight-through, alpha cache."""

from __future__ import annotations

import pytest
import torch

from esper.contracts.alpha import AlphaAlgorithm
from esper.seeds.blending import AlphaTensorCache, BlendGate, blend, straight_through

# (shape, channel_dim): CNN 1-D, CNN 2-D, transformer.
LAYOUTS = [((4, 8, 11), 1), ((4, 8, 5, 6), 1), ((4, 7, 8), -1)]
WIDTH = 8


def _tensors(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    host = torch.randn(shape, generator=g) * 3
    seed_in = torch.randn(shape, generator=g)
    seed_out = torch.randn(shape, generator=g) * 5
    return host, seed_out, seed_in


def _gate_for(algorithm: AlphaAlgorithm, channel_dim: int) -> BlendGate | None:
    return BlendGate(WIDTH, channel_dim) if algorithm is AlphaAlgorithm.GATE else None


@pytest.mark.parametrize(("shape", "channel_dim"), LAYOUTS)
@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm))
def test_identity_at_alpha_zero(shape: tuple[int, ...], channel_dim: int, algorithm: AlphaAlgorithm) -> None:
    host, seed_out, seed_in = _tensors(shape)
    gate = _gate_for(algorithm, channel_dim)
    out = blend(algorithm, host, seed_out, seed_in, torch.tensor(0.0), gate)
    assert torch.equal(out, host)
    # Sanity: the same call at alpha > 0 does change the output.
    moved = blend(algorithm, host, seed_out, seed_in, torch.tensor(0.5), gate)
    assert not torch.equal(moved, host)


@pytest.mark.parametrize(("shape", "channel_dim"), LAYOUTS)
@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm))
def test_per_sample_alpha_zero_rows_are_identity(
    shape: tuple[int, ...], channel_dim: int, algorithm: AlphaAlgorithm
) -> None:
    host, seed_out, seed_in = _tensors(shape, seed=1)
    gate = _gate_for(algorithm, channel_dim)
    alpha = torch.tensor([0.0, 0.7, 0.0, 1.0])
    out = blend(algorithm, host, seed_out, seed_in, alpha, gate)
    assert out.shape == host.shape
    assert torch.equal(out[0], host[0]) and torch.equal(out[2], host[2])
    assert not torch.equal(out[1], host[1]) and not torch.equal(out[3], host[3])
    # Each row equals the same operator applied with that row's scalar alpha.
    for row in range(4):
        single = blend(
            algorithm, host[row : row + 1], seed_out[row : row + 1], seed_in[row : row + 1], alpha[row], gate
        )
        torch.testing.assert_close(out[row : row + 1], single, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("shape", "channel_dim"), LAYOUTS)
def test_operator_formulas(shape: tuple[int, ...], channel_dim: int) -> None:
    host, seed_out, seed_in = _tensors(shape, seed=2)
    alpha = torch.tensor(0.3)
    add = blend(AlphaAlgorithm.ADD, host, seed_out, seed_in, alpha, None)
    torch.testing.assert_close(add, host + 0.3 * (seed_out - host))
    mul = blend(AlphaAlgorithm.MULTIPLY, host, seed_out, seed_in, alpha, None)
    torch.testing.assert_close(mul, host * (1 + 0.3 * torch.tanh(seed_out - seed_in)))
    gate = BlendGate(WIDTH, channel_dim)
    g = gate(seed_in)
    assert g.shape == (shape[0],) + (1,) * (len(shape) - 1)
    assert bool(((g > 0) & (g < 1)).all())
    gated = blend(AlphaAlgorithm.GATE, host, seed_out, seed_in, alpha, gate)
    torch.testing.assert_close(gated, host + 0.3 * g * (seed_out - host))


@pytest.mark.parametrize(("shape", "_channel_dim"), LAYOUTS)
def test_add_at_alpha_one_is_seed_output(shape: tuple[int, ...], _channel_dim: int) -> None:
    host, seed_out, seed_in = _tensors(shape, seed=3)
    out = blend(AlphaAlgorithm.ADD, host, seed_out, seed_in, torch.tensor(1.0), None)
    assert torch.equal(out, seed_out)


@pytest.mark.parametrize(("shape", "channel_dim"), LAYOUTS)
def test_gate_parameters_get_gradient_when_alpha_positive(shape: tuple[int, ...], channel_dim: int) -> None:
    host, seed_out, seed_in = _tensors(shape, seed=4)
    gate = BlendGate(WIDTH, channel_dim)
    out = blend(AlphaAlgorithm.GATE, host, seed_out, seed_in, torch.tensor(0.6), gate)
    out.square().sum().backward()
    for name, param in gate.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name
    gate.zero_grad(set_to_none=True)
    # At alpha 0 the gate has no influence, so its gradient is exactly zero.
    out = blend(AlphaAlgorithm.GATE, host, seed_out, seed_in, torch.tensor(0.0), gate)
    out.square().sum().backward()
    assert all(p.grad is not None and not p.grad.any() for p in gate.parameters())


def test_gate_init_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = BlendGate(16, 1)
    assert torch.equal(torch.rand(3), expected_next)
    torch.manual_seed(999)
    b = BlendGate(16, 1)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.hidden.out_features == 4 and BlendGate(64, -1).hidden.out_features == 16


def test_gate_pools_over_non_channel_dims() -> None:
    gate = BlendGate(WIDTH, 1)
    x = torch.randn(2, WIDTH, 5, 3)
    # Permuting spatial positions does not change the pooled features.
    shuffled = x.flatten(2)[:, :, torch.randperm(15, generator=torch.Generator().manual_seed(0))]
    torch.testing.assert_close(gate(x), gate(shuffled.view(2, WIDTH, 5, 3)))
    tgate = BlendGate(WIDTH, -1)
    seq = torch.randn(3, 6, WIDTH)
    torch.testing.assert_close(tgate(seq), tgate(seq.flip(1)))


def test_gate_rejects_bad_construction_and_input() -> None:
    with pytest.raises(ValueError, match="width"):
        BlendGate(0, 1)
    with pytest.raises(ValueError, match="channel_dim"):
        BlendGate(8, 2)
    gate = BlendGate(8, -1)
    with pytest.raises(ValueError, match="8"):
        gate(torch.randn(2, 8, 5))  # 5 features on the last dim, not 8
    with pytest.raises(ValueError, match="shape"):
        gate(torch.randn(2, 8))


def test_blend_argument_errors() -> None:
    host, seed_out, seed_in = _tensors((4, 8, 6))
    alpha = torch.tensor(0.5)
    with pytest.raises(ValueError, match="needs a BlendGate"):
        blend(AlphaAlgorithm.GATE, host, seed_out, seed_in, alpha, None)
    for algorithm in (AlphaAlgorithm.ADD, AlphaAlgorithm.MULTIPLY):
        with pytest.raises(ValueError, match="only used with"):
            blend(algorithm, host, seed_out, seed_in, alpha, BlendGate(8, 1))
    with pytest.raises(ValueError, match=r"per-sample of shape \(4,\)"):
        blend(AlphaAlgorithm.ADD, host, seed_out, seed_in, torch.zeros(3), None)
    with pytest.raises(ValueError, match="per-sample"):
        blend(AlphaAlgorithm.ADD, host, seed_out, seed_in, torch.zeros(4, 1), None)
    with pytest.raises(ValueError, match="dtype"):
        blend(AlphaAlgorithm.ADD, host, seed_out, seed_in, torch.tensor(0.5, dtype=torch.float64), None)
    with pytest.raises(ValueError, match="seed_out shape"):
        blend(AlphaAlgorithm.ADD, host, seed_out[:, :, :3], seed_in, alpha, None)
    with pytest.raises(ValueError, match="seed_in shape"):
        blend(AlphaAlgorithm.MULTIPLY, host, seed_out, seed_in[:2], alpha, None)
    with pytest.raises(TypeError, match="AlphaAlgorithm"):
        blend(0, host, seed_out, seed_in, alpha, None)  # type: ignore[arg-type]


def test_straight_through_value_and_gradient() -> None:
    host, seed_out, _ = _tensors((4, 8, 6), seed=5)
    host = host.requires_grad_()
    seed_out = seed_out.requires_grad_()
    out = straight_through(host, seed_out)
    assert torch.equal(out, host)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(6))
    (out * weights).sum().backward()
    # Both receive the slot output's gradient unchanged.
    assert seed_out.grad is not None and torch.equal(seed_out.grad, weights)
    assert host.grad is not None and torch.equal(host.grad, weights)
    with pytest.raises(ValueError, match="seed_out shape"):
        straight_through(host, seed_out[:1])


def test_alpha_cache_reuses_until_something_changes() -> None:
    cache = AlphaTensorCache()
    first = cache.get(0.5, "cpu", torch.float32)
    assert first.dim() == 0 and first.item() == 0.5 and first.dtype == torch.float32
    assert cache.get(0.5, torch.device("cpu"), torch.float32) is first
    changed_alpha = cache.get(0.7, "cpu", torch.float32)
    assert changed_alpha is not first and changed_alpha.item() == pytest.approx(0.7)
    changed_dtype = cache.get(0.7, "cpu", torch.float64)
    assert changed_dtype is not changed_alpha
    assert changed_dtype.dtype == torch.float64 and changed_dtype.item() == 0.7
    assert cache.get(0.7, "cpu", torch.float64) is changed_dtype
    back = cache.get(0.5, "cpu", torch.float64)  # alpha changed back: rebuilt from the value
    assert back is not changed_dtype and back.item() == 0.5
    assert cache.get(0.7, "meta", torch.float64).device.type == "meta"


@pytest.mark.parametrize(
    ("alpha", "dtype", "message"),
    [(1.5, torch.float32, "alpha"), (-0.1, torch.float32, "alpha"), (0.5, torch.int64, "dtype")],
)
def test_alpha_cache_rejects_bad_values(alpha: float, dtype: torch.dtype, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AlphaTensorCache().get(alpha, "cpu", dtype)
