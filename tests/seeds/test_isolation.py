"""Gradient isolation: a TRAINING seed never touches the host's gradients; at alpha 1 it is part of the host.

TRAINING: the seed sees `h.detach()` and joins straight-through, so every
host gradient is bitwise what it is without the seed, while the seed learns.
BLENDING (alpha < 1): the seed's input is still detached.
HOLDING (alpha 1): it is not, so layers upstream of the slot learn through the seed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.stages import SeedStage
from esper.hosts import CNNHost, CNNHostConfig, GPTHost, GPTHostConfig
from esper.model import MorphogeneticModel
from esper.seeds import GateConfig, SeedSlot
from esper.seeds.blending import blend

FAST = GateConfig(permissive=True, g2_min_epochs=0)
SLOT = "r0c1"  # the middle slot: it has host layers upstream and downstream
Builder = Callable[[], tuple[MorphogeneticModel, Tensor, Tensor]]


def cnn_model() -> tuple[MorphogeneticModel, Tensor, Tensor]:
    torch.manual_seed(0)
    host = CNNHost(CNNHostConfig(in_channels=2, num_classes=5, widths=[8, 16, 8], spatial_dims=1))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, 16, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    return MorphogeneticModel(host, gates=FAST), x, y


def gpt_model() -> tuple[MorphogeneticModel, Tensor, Tensor]:
    torch.manual_seed(0)
    cfg = GPTHostConfig(vocab_size=11, block_size=8, d_model=16, n_heads=2, n_layers=3, layers_per_segment=1)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 11, (3, 8), generator=g)
    return MorphogeneticModel(GPTHost(cfg), gates=FAST), x, x.roll(-1, dims=1)


def loss_of(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def perturb_zero_layers(slot: SeedSlot) -> None:
    """Give the zero-initialised (last) layer values, so gradient reaches every seed layer."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in slot.seed_parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def host_grads(model: MorphogeneticModel) -> dict[str, Tensor]:
    return {name: p.grad.clone() for name, p in model.host.named_parameters() if p.grad is not None}


def drive(
    model: MorphogeneticModel, blueprint: str, stage: SeedStage, algorithm: AlphaAlgorithm, steps: int
) -> SeedSlot:
    model.germinate(SLOT, blueprint, alpha_algorithm=algorithm, blend_steps=steps)
    slot = model.slot(SLOT)
    while slot.stage != stage:
        if slot.stage == SeedStage.BLENDING and stage == SeedStage.HOLDING:
            while not slot.alpha.at_target:
                slot.step_epoch()
        assert slot.advance().passed
    return slot


# ---------------------------------------------------------------- TRAINING


@pytest.mark.parametrize(
    ("build", "blueprint"),
    [
        (cnn_model, "conv_light"),
        (cnn_model, "bottleneck"),
        (cnn_model, "attention"),
        (gpt_model, "lora"),
        (gpt_model, "mlp_small"),
        (gpt_model, "attention"),
    ],
)
def test_training_seed_leaves_host_gradients_bitwise_unchanged(build: Builder, blueprint: str) -> None:
    model, x, y = build()
    bare = copy.deepcopy(model)
    slot = drive(model, blueprint, SeedStage.TRAINING, AlphaAlgorithm.ADD, 3)
    perturb_zero_layers(slot)

    loss_of(bare, x, y).backward()
    loss = loss_of(model, x, y)
    loss.backward()

    reference = host_grads(bare)
    grads = host_grads(model)
    assert reference.keys() == grads.keys() and reference
    for name, grad in grads.items():
        assert torch.equal(grad, reference[name]), name
    # The seed does learn: every one of its parameters gets a non-zero gradient.
    for name, p in slot.seed.named_parameters():  # type: ignore[union-attr]
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # And the loss value is the host's, bit for bit.
    assert torch.equal(loss.detach(), loss_of(bare, x, y).detach())


# ------------------------------------------------------ alpha 1 / alpha < 1


def manual_loss(model: MorphogeneticModel, x: Tensor, y: Tensor, *, detach_seed_input: bool) -> Tensor:
    """The model's forward written out by hand, with the seed's input detached or not."""
    slot = model.slot(SLOT)
    state = slot.state
    assert state is not None and slot.seed is not None
    h = model.host.stem(x)
    for segment, sid in zip(model.host.segments, model.host.slot_ids(), strict=True):
        h = segment(h)
        if sid == SLOT:
            seed_in = h.detach() if detach_seed_input else h
            alpha = torch.tensor(slot.alpha.alpha, dtype=h.dtype)
            h = blend(state.alpha_algorithm, h, slot.seed(seed_in), seed_in, alpha, slot.blend_gate)
    logits = model.host.head(h)
    return F.cross_entropy(logits, y)


def upstream(model: MorphogeneticModel) -> list[nn.Parameter]:
    # Segments 0 and 1 run before slot r0c1.
    return [*model.host.segments[0].parameters(), *model.host.segments[1].parameters()]


def grads_for(model: MorphogeneticModel, loss: Tensor) -> list[Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in upstream(model)]


def all_close(a: list[Tensor], b: list[Tensor]) -> bool:
    return all(torch.allclose(u, v, atol=1e-7, rtol=1e-5) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm))
def test_holding_upstream_layers_learn_through_the_seed(algorithm: AlphaAlgorithm) -> None:
    model, x, y = cnn_model()
    slot = drive(model, "conv_light", SeedStage.HOLDING, algorithm, 0)
    assert slot.alpha.alpha == 1.0
    perturb_zero_layers(slot)

    real = grads_for(model, loss_of(model, x, y))
    attached = grads_for(model, manual_loss(model, x, y, detach_seed_input=False))
    detached = grads_for(model, manual_loss(model, x, y, detach_seed_input=True))

    assert all_close(real, attached)
    assert not all_close(real, detached)  # the seed path carries real gradient upstream
    if algorithm is AlphaAlgorithm.ADD:
        # lerp(h, s, 1) ignores h: with a detached seed input nothing would reach upstream at all.
        assert all(not g.any() for g in detached)
        assert any(g.any() for g in real)


def test_fossilized_keeps_upstream_gradient() -> None:
    model, x, y = cnn_model()
    slot = drive(model, "conv_light", SeedStage.HOLDING, AlphaAlgorithm.ADD, 0)
    slot.record_contribution(2.0)
    assert slot.fossilize().passed
    perturb_zero_layers(slot)
    real = grads_for(model, loss_of(model, x, y))
    assert all_close(real, grads_for(model, manual_loss(model, x, y, detach_seed_input=False)))
    assert any(g.any() for g in real)


@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm))
def test_blending_below_one_isolates_the_seed_input(algorithm: AlphaAlgorithm) -> None:
    model, x, y = cnn_model()
    slot = drive(model, "conv_light", SeedStage.BLENDING, algorithm, 2)
    slot.step_epoch()
    assert slot.alpha.alpha == 0.5
    perturb_zero_layers(slot)

    real = grads_for(model, loss_of(model, x, y))
    detached = grads_for(model, manual_loss(model, x, y, detach_seed_input=True))
    attached = grads_for(model, manual_loss(model, x, y, detach_seed_input=False))
    assert all_close(real, detached)
    assert not all_close(real, attached)


# ------------------------------------------------- blend_full_host_gradient


def gpt_blending(full_host_gradient: bool) -> tuple[MorphogeneticModel, MorphogeneticModel, Tensor, Tensor]:
    """(bare host, the same host with a fresh mlp seed BLENDING at alpha 0.5, inputs, targets)."""
    bare, x, y = gpt_model()
    gates = GateConfig(permissive=True, g2_min_epochs=0, blend_full_host_gradient=full_host_gradient)
    model = MorphogeneticModel(copy.deepcopy(bare.host), gates=gates)
    slot = drive(model, "mlp", SeedStage.BLENDING, AlphaAlgorithm.ADD, 2)
    slot.step_epoch()
    assert slot.alpha.alpha == 0.5
    return bare, model, x, y


@pytest.mark.parametrize("full_host_gradient", [False, True])
def test_blending_passes_upstream_all_or_one_minus_alpha_of_the_gradient(full_host_gradient: bool) -> None:
    # A fresh seed's output branch is zero, so the model computes exactly the bare host's function;
    # only the gradient reaching the layers upstream of the slot differs.
    bare, model, x, y = gpt_blending(full_host_gradient)
    reference = grads_for(bare, loss_of(bare, x, y))
    real = grads_for(model, loss_of(model, x, y))
    assert any(g.any() for g in reference)
    share = 1.0 if full_host_gradient else 0.5
    assert all_close(real, [share * g for g in reference])


def test_full_host_gradient_changes_neither_the_output_nor_the_seed_gradient() -> None:
    _, lerp_model, x, y = gpt_blending(False)
    _, full_model, _, _ = gpt_blending(True)
    for model in (lerp_model, full_model):
        perturb_zero_layers(model.slot(SLOT))
    lerp_loss, full_loss = loss_of(lerp_model, x, y), loss_of(full_model, x, y)
    assert torch.equal(lerp_loss.detach(), full_loss.detach())
    lerp_loss.backward()
    full_loss.backward()
    lerp_seed, full_seed = lerp_model.slot(SLOT).seed, full_model.slot(SLOT).seed
    assert lerp_seed is not None and full_seed is not None
    for (name, p), q in zip(lerp_seed.named_parameters(), full_seed.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None and torch.allclose(p.grad, q.grad), name
    # The seed is still isolated: upstream layers get a different (larger) gradient, not the seed's.
    assert not all_close(
        [p.grad for p in upstream(lerp_model)],  # type: ignore[misc]
        [p.grad for p in upstream(full_model)],  # type: ignore[misc]
    )


def test_full_host_gradient_is_left_out_of_dumps_while_false() -> None:
    # Configs and run summaries written before the setting existed must read and compare the same.
    assert "blend_full_host_gradient" not in GateConfig().model_dump(mode="json")
    dumped = GateConfig(blend_full_host_gradient=True).model_dump(mode="json")
    assert dumped["blend_full_host_gradient"] is True
    assert GateConfig.model_validate(dumped).blend_full_host_gradient is True
