"""Every blueprint x layout x alpha algorithm: a new seed is the identity, shapes and counts are exact.

Layouts: CNN 1-D (B, C, L), CNN 2-D (B, C, H, W), transformer (B, T, D).
"""

from __future__ import annotations

import pytest
import torch

from esper.blueprints import default_registry
from esper.contracts import SlotShape
from esper.contracts.alpha import AlphaAlgorithm, AlphaMode
from esper.contracts.stages import SeedStage
from esper.seeds import GateConfig, LifecycleError, SeedSlot

WIDTH = 32
LAYOUTS = {
    "cnn1d": (SlotShape("cnn", WIDTH, spatial_dims=1), (2, WIDTH, 12)),
    "cnn2d": (SlotShape("cnn", WIDTH, spatial_dims=2), (2, WIDTH, 6, 5)),
    "transformer": (SlotShape("transformer", WIDTH, n_heads=4), (2, 7, WIDTH)),
}
# Permissive gates with no epoch minimum: every advance here passes at once.
FAST = GateConfig(permissive=True, g2_min_epochs=0)


def _cases() -> list[object]:
    registry = default_registry()
    return [
        pytest.param(layout, name, algorithm, id=f"{layout}-{name}-{algorithm.name}")
        for layout, (shape, _) in LAYOUTS.items()
        for name in registry.names(shape.topology)
        for algorithm in AlphaAlgorithm
    ]


def blend_gate_params(width: int) -> int:
    # BlendGate: Linear(width -> max(4, width // 4)) -> ReLU -> Linear(-> 1), both with bias.
    hidden = max(4, width // 4)
    return width * hidden + hidden + hidden + 1


def perturb(slot: SeedSlot) -> bool:
    """Move every seed (and gate) parameter off its birth value.

    Returns False when the seed module itself has no parameters (noop): it
    stays the identity, so the blend cannot move away from the host.
    """
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    assert slot.seed is not None
    return any(True for _ in slot.seed.parameters())


def test_matrix_covers_every_blueprint() -> None:
    registry = default_registry()
    assert len(registry.names("cnn")) == 8 and len(registry.names("transformer")) == 8
    assert len(_cases()) == (8 * 2 + 8) * 3


@pytest.mark.parametrize(("layout", "blueprint", "algorithm"), _cases())
def test_new_seed_is_identity_and_exactly_counted(
    layout: str, blueprint: str, algorithm: AlphaAlgorithm
) -> None:
    shape, input_shape = LAYOUTS[layout]
    registry = default_registry()
    torch.manual_seed(0)
    x = torch.randn(input_shape)
    slot = SeedSlot("r0c0", shape, gates=FAST)

    reason = registry.unavailable_reason(blueprint, shape)
    if reason is not None:
        # No silent fallback: germinating an unbuildable blueprint is refused and says why.
        with pytest.raises(LifecycleError, match=blueprint):
            slot.germinate(blueprint, alpha_algorithm=algorithm)
        assert slot.state is None and slot.seed is None
        return

    slot.germinate(blueprint, alpha_algorithm=algorithm, blend_steps=4)
    assert slot.seed is not None
    # Exact parameter count: the registry's count plus the blend gate for GATE.
    expected = registry.param_count(blueprint, shape)
    if algorithm is AlphaAlgorithm.GATE:
        assert slot.blend_gate is not None
        expected += blend_gate_params(WIDTH)
    else:
        assert slot.blend_gate is None
    assert slot.seed_param_count() == expected

    with torch.no_grad():
        born = slot.seed(x)
    assert born.shape == x.shape and torch.equal(born, x)  # the seed itself is the identity at birth
    assert torch.equal(slot(x), x)  # GERMINATED: not in forward

    assert slot.advance().passed and slot.stage == SeedStage.TRAINING
    assert torch.equal(slot(x), x)

    assert slot.advance().passed and slot.stage == SeedStage.BLENDING
    assert slot.alpha.mode == AlphaMode.UP and slot.alpha.alpha == 0.0  # a real ramp, at its start
    moved = perturb(slot)
    out = slot(x)
    assert out.shape == x.shape and torch.equal(out, x)

    slot.step_epoch()
    assert slot.alpha.alpha == 0.25
    mid = slot(x)
    assert mid.shape == x.shape and torch.isfinite(mid).all()
    if moved:
        # The seed now differs from the identity, so alpha 0 above was a real test.
        assert not torch.equal(mid, x)
    with slot.force_alpha(0.0):
        assert torch.equal(slot(x), x)
    assert torch.equal(slot(x), mid)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_other_batch_and_sizes_keep_shape(layout: str) -> None:
    shape, input_shape = LAYOUTS[layout]
    registry = default_registry()
    # Another batch size and another length (the sequence axis for transformers).
    if shape.topology == "transformer":
        other: tuple[int, ...] = (5, input_shape[1] + 3, WIDTH)
    else:
        other = (5, *input_shape[1:-1], input_shape[-1] + 3)
    x = torch.randn(other)
    for name in registry.names(shape.topology):
        if registry.unavailable_reason(name, shape) is not None:
            continue
        slot = SeedSlot("r0c0", shape, gates=FAST)
        slot.germinate(name, blend_steps=0)
        slot.advance()
        slot.advance()
        perturb(slot)
        assert slot(x).shape == x.shape, name
