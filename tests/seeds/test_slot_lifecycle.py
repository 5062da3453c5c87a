"""SeedSlot lifecycle by hand: the happy path, refusals, prunes, cooldown, retargets, force_alpha."""

from __future__ import annotations

import pytest
import torch

from esper.contracts import SLOT_FREE_AFTER_PRUNE_TICKS, SlotShape, is_valid_transition
from esper.contracts.alpha import AlphaAlgorithm, AlphaCurve, AlphaMode
from esper.contracts.stages import SeedStage
from esper.seeds import GateConfig, LifecycleError, SeedSlot

S = SeedStage
SHAPE = SlotShape("cnn", 8, spatial_dims=1)
FAST = GateConfig(permissive=True, g2_min_epochs=0)


def new_slot(gates: GateConfig | None = None) -> SeedSlot:
    torch.manual_seed(0)
    return SeedSlot("r0c1", SHAPE, gates=gates)


def perturb(slot: SeedSlot, scale: float = 0.3) -> None:
    """Make the seed differ from the identity (it is the identity at birth)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def fast_slot(
    stage: SeedStage, *, blend_steps: int = 0, algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD
) -> SeedSlot:
    """A slot with permissive gates driven to `stage` (GERMINATED..FOSSILIZED)."""
    slot = new_slot(FAST)
    slot.germinate("conv_light", blend_steps=blend_steps, alpha_algorithm=algorithm)
    order = [S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING]
    for _ in range(order.index(stage) if stage in order else 3):
        if slot.stage == S.BLENDING:
            while not slot.alpha.at_target:
                slot.step_epoch()
        assert slot.advance().passed
    if stage == S.FOSSILIZED:
        slot.record_contribution(2.0)
        assert slot.fossilize().passed
    assert slot.stage == stage
    return slot


def snapshot(slot: SeedSlot) -> tuple[object, ...]:
    params = {name: (p.detach().clone(), p.requires_grad) for name, p in slot.named_parameters()}
    return (
        slot.stage,
        None if slot.state is None else slot.state.model_dump(),
        slot.alpha.to_dict(),
        slot.alpha.blend,
        slot.pending_prune_reason,
        slot.tick,
        params,
    )


def assert_same(before: tuple[object, ...], after: tuple[object, ...]) -> None:
    assert before[:6] == after[:6]
    params_before, params_after = before[6], after[6]
    assert params_before.keys() == params_after.keys()  # type: ignore[attr-defined]
    for name, (value, grad_flag) in params_before.items():  # type: ignore[attr-defined]
        assert torch.equal(value, params_after[name][0]) and grad_flag == params_after[name][1], name  # type: ignore[index]


X = torch.randn(3, 8, 10, generator=torch.Generator().manual_seed(2))


# ------------------------------------------------------------- happy path


def test_strict_happy_path_with_real_measurements() -> None:
    slot = new_slot()
    seen: list[tuple[SeedStage, SeedStage, str]] = []
    slot.stage_listeners.append(lambda s, a, b, why: seen.append((a, b, why)))
    assert slot.is_free and slot.stage == S.DORMANT
    g0 = slot.germinate("conv_light", blend_steps=3)
    assert g0.passed and slot.stage == S.GERMINATED and slot.seed is not None
    assert slot.advance().passed and slot.stage == S.TRAINING

    # G2 needs 3 epochs, a projected gain of 0.5 pt and a measured gradient ratio.
    slot.record_accuracy(0.40)
    result = slot.advance()
    assert not result.passed and slot.stage == S.TRAINING
    assert any("never measured" in name for name in result.checks_failed)
    for _ in range(3):
        slot.step_epoch()
    slot.record_accuracy(0.42)
    slot.record_projected_contribution(2.0)
    perturb(slot)
    loss = slot(X.clone().requires_grad_(True)).pow(2).sum()
    loss.backward()
    ratio = slot.measure_gradients(host_gradient_norm=1.0)
    assert ratio is not None and ratio > 0.1
    assert slot.state is not None and slot.state.metrics.gradient_ratio == ratio
    assert slot.advance().passed and slot.stage == S.BLENDING
    assert slot.alpha.mode == AlphaMode.UP and slot.alpha.alpha == 0.0

    # The linear ramp over 3 ticks: 1/3, 2/3, then exactly 1.0.
    alphas = []
    for _ in range(3):
        slot.step_epoch()
        alphas.append(slot.alpha.alpha)
    assert alphas == pytest.approx([1 / 3, 2 / 3, 1.0]) and alphas[-1] == 1.0
    assert slot.advance().passed and slot.stage == S.HOLDING

    assert not slot.fossilize().passed  # contribution never measured
    slot.record_contribution(0.5)
    assert not slot.fossilize().passed  # below 1.0 pt
    slot.record_contribution(1.5)
    assert slot.state.metrics.contribution_velocity == pytest.approx(0.3)
    assert slot.fossilize().passed and slot.stage == S.FOSSILIZED

    stages = [a for a, _, _ in seen] + [seen[-1][1]]
    assert stages == [S.DORMANT, S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED]
    assert all(is_valid_transition(a, b) for a, b, _ in seen)
    assert [r.stage for r in slot.state.history] == stages[1:]
    assert slot.state.history[2].tick == 3  # entered BLENDING after three step_epoch ticks


def test_fossilized_is_terminal() -> None:
    slot = fast_slot(S.FOSSILIZED)
    before = snapshot(slot)
    for action in (
        lambda: slot.advance(),
        lambda: slot.fossilize(),
        lambda: slot.prune("late"),
        lambda: slot.set_alpha_target(0.5, steps=3),
        lambda: slot.germinate("noop"),
    ):
        with pytest.raises(LifecycleError, match="r0c1"):
            action()
        assert_same(before, snapshot(slot))
    slot.step_epoch()
    assert slot.stage == S.FOSSILIZED and slot.alpha.alpha == 1.0


def test_gate_listener_sees_every_evaluation() -> None:
    slot = new_slot()
    results = []
    slot.gate_listeners.append(lambda s, target, result: results.append((target, result.passed)))
    slot.germinate("noop")
    slot.advance()
    slot.advance()
    assert results == [(S.TRAINING, True), (S.BLENDING, False)]


# --------------------------------------------------------------- refusals


def test_actions_on_a_dormant_slot_are_refused() -> None:
    slot = new_slot()
    for action in (
        lambda: slot.advance(),
        lambda: slot.fossilize(),
        lambda: slot.prune("x"),
        lambda: slot.set_alpha_target(1.0, steps=0),
        lambda: slot.record_contribution(1.0),
    ):
        with pytest.raises(LifecycleError, match="DORMANT"):
            action()
    assert slot.state is None and slot.seed is None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"blueprint": "nope"}, "nope"),
        ({"blueprint": "lora"}, "lora"),  # a transformer blueprint in a cnn slot
        ({"blueprint": "noop", "alpha_target": 0.6}, "alpha_target"),
        ({"blueprint": "noop", "blend_steps": -1}, "blend_steps"),
        ({"blueprint": "noop", "blend_steps": 2.0}, "blend_steps"),
        ({"blueprint": "noop", "alpha_algorithm": 0}, "alpha_algorithm"),
    ],
)
def test_bad_germinate_changes_nothing(kwargs: dict[str, object], fragment: str) -> None:
    slot = new_slot()
    with pytest.raises(LifecycleError, match=fragment):
        slot.germinate(**kwargs)  # type: ignore[arg-type]
    assert slot.state is None and slot.seed is None and slot.blend_gate is None
    assert list(slot.parameters()) == []


def test_unknown_blueprint_error_lists_available() -> None:
    with pytest.raises(LifecycleError, match="conv_light"):
        new_slot().germinate("nope")


def test_germinate_on_busy_slot_is_refused() -> None:
    slot = fast_slot(S.TRAINING)
    seed = slot.seed
    before = snapshot(slot)
    with pytest.raises(LifecycleError, match="not DORMANT"):
        slot.germinate("noop")
    assert slot.seed is seed
    assert_same(before, snapshot(slot))


def test_failed_gate_changes_nothing() -> None:
    slot = new_slot()  # strict gates
    slot.germinate("conv_light")
    slot.advance()
    before = snapshot(slot)
    assert not slot.advance().passed
    assert_same(before, snapshot(slot))


def test_advance_to_a_wrong_target_is_refused() -> None:
    slot = fast_slot(S.TRAINING)
    with pytest.raises(LifecycleError, match="goes to BLENDING, not HOLDING"):
        slot.advance(S.HOLDING)
    with pytest.raises(LifecycleError, match="only from HOLDING"):
        slot.fossilize()
    assert slot.stage == S.TRAINING


# ------------------------------------------------------- prune & cooldown


@pytest.mark.parametrize("stage", [S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING])
def test_prune_now_then_free_after_exactly_seven_ticks(stage: SeedStage) -> None:
    slot = fast_slot(stage, blend_steps=3)
    slot.prune("bad seed")
    assert slot.stage == S.PRUNED and slot.seed is None and slot.blend_gate is None
    assert slot.alpha.alpha == 0.0 and slot.state is not None and slot.state.prune_reason == "bad seed"
    assert torch.equal(slot(X), X)
    stages = []
    for _ in range(SLOT_FREE_AFTER_PRUNE_TICKS):
        assert not slot.is_free
        with pytest.raises(LifecycleError, match="not DORMANT"):
            slot.germinate("noop")
        slot.step_epoch()
        stages.append(slot.stage)
    assert slot.is_free and slot.stage == S.DORMANT
    assert stages == [S.EMBARGOED] * 5 + [S.RESETTING, S.DORMANT]
    slot.germinate("noop")
    assert slot.stage == S.GERMINATED and slot.state is not None
    assert [r.stage for r in slot.state.history] == [S.GERMINATED]  # a fresh history


def test_scheduled_prune_ramps_down_with_a_frozen_seed() -> None:
    slot = fast_slot(S.HOLDING)
    perturb(slot)
    full = slot(X)
    slot.prune("fade out", steps=4, curve=AlphaCurve.COSINE)
    assert slot.stage == S.HOLDING and slot.pending_prune_reason == "fade out"
    assert all(not p.requires_grad for p in slot.seed_parameters())
    assert torch.equal(slot(X), full)  # nothing moves until the first tick
    for refused in (
        lambda: slot.advance(),
        lambda: slot.set_alpha_target(0.5, steps=0),
        lambda: slot.prune("again", steps=2),
    ):
        with pytest.raises(LifecycleError, match="scheduled prune"):
            refused()
    alphas = []
    for _ in range(3):
        slot.step_epoch()
        alphas.append(slot.alpha.alpha)
        assert slot.stage == S.HOLDING
    assert alphas == sorted(alphas, reverse=True) and 0.0 < alphas[-1] < alphas[0] < 1.0
    slot.step_epoch()
    assert slot.stage == S.PRUNED and slot.seed is None and slot.state is not None
    assert slot.state.prune_reason == "fade out" and slot.pending_prune_reason is None
    for _ in range(SLOT_FREE_AFTER_PRUNE_TICKS):
        slot.step_epoch()
    assert slot.is_free


def test_scheduled_prune_mid_ramp_starts_from_current_alpha() -> None:
    slot = fast_slot(S.BLENDING, blend_steps=4)
    slot.step_epoch()
    slot.step_epoch()
    assert slot.alpha.alpha == pytest.approx(0.5) and slot.alpha.mode == AlphaMode.UP
    slot.prune("stop", steps=2)
    assert slot.alpha.mode == AlphaMode.DOWN and slot.alpha.start == pytest.approx(0.5)
    slot.step_epoch()
    assert slot.alpha.alpha == pytest.approx(0.25)
    slot.step_epoch()
    assert slot.stage == S.PRUNED


def test_scheduled_prune_at_alpha_zero_prunes_now() -> None:
    slot = fast_slot(S.TRAINING)
    slot.prune("early", steps=5)
    assert slot.stage == S.PRUNED and slot.pending_prune_reason is None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"steps": -1}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"steps": 3, "steepness": 0.0}, "steepness"),
        ({"steps": 3, "steepness": float("nan")}, "steepness"),
        ({"steps": 3, "curve": 7}, "curve"),
    ],
)
def test_bad_scheduled_prune_changes_nothing(kwargs: dict[str, object], fragment: str) -> None:
    # Regression: the seed used to be frozen and the ramp halted before the curve was checked.
    slot = fast_slot(S.BLENDING, blend_steps=4)
    slot.step_epoch()
    before = snapshot(slot)
    with pytest.raises(LifecycleError, match=fragment):
        slot.prune("x", **kwargs)  # type: ignore[arg-type]
    assert_same(before, snapshot(slot))
    assert slot.alpha.mode == AlphaMode.UP


@pytest.mark.parametrize("stage", [S.PRUNED, S.EMBARGOED, S.RESETTING])
def test_prune_during_cooldown_is_refused(stage: SeedStage) -> None:
    slot = fast_slot(S.TRAINING)
    slot.prune("x")
    while slot.stage != stage:
        slot.step_epoch()
    with pytest.raises(LifecycleError, match=f"cannot prune from {stage.name}"):
        slot.prune("again")


# ------------------------------------------------------------- retargets


def test_partial_target_and_retarget_from_holding() -> None:
    slot = fast_slot(S.HOLDING)
    slot.set_alpha_target(0.5, steps=2)
    assert slot.stage == S.BLENDING and slot.alpha.blend is not None and slot.alpha.blend.target == 0.5
    assert slot.state.previous_stage == S.HOLDING
    with pytest.raises(LifecycleError, match="still ramping"):
        slot.set_alpha_target(0.7, steps=2)
    slot.step_epoch()
    assert slot.alpha.alpha == pytest.approx(0.75)
    slot.step_epoch()
    assert slot.alpha.alpha == 0.5 and slot.alpha.at_target
    result = slot.advance()  # G3 wants the ramp finished at 1.0
    assert not result.passed and slot.stage == S.BLENDING
    slot.set_alpha_target(1.0, steps=0)
    assert slot.alpha.alpha == 1.0 and slot.advance().passed and slot.stage == S.HOLDING


def test_germinate_with_partial_target() -> None:
    slot = new_slot(FAST)
    slot.germinate("conv_light", alpha_target=0.7, blend_steps=0)
    slot.advance()
    slot.advance()
    assert slot.stage == S.BLENDING and slot.alpha.alpha == 0.7
    assert not slot.advance().passed


@pytest.mark.parametrize(
    ("stage", "target", "fragment"),
    [
        (S.GERMINATED, 1.0, "only in BLENDING or HOLDING"),
        (S.TRAINING, 1.0, "only in BLENDING or HOLDING"),
        (S.HOLDING, 0.6, "must be one of"),
        (S.HOLDING, 1.0, "already 1.0"),
    ],
)
def test_bad_retarget_changes_nothing(stage: SeedStage, target: float, fragment: str) -> None:
    slot = fast_slot(stage)
    before = snapshot(slot)
    with pytest.raises(LifecycleError, match=fragment):
        slot.set_alpha_target(target, steps=3)
    assert_same(before, snapshot(slot))


# ------------------------------------------------------------ force_alpha


def test_force_alpha_restores_alpha_and_cache() -> None:
    slot = fast_slot(S.BLENDING, blend_steps=2)
    perturb(slot)
    slot.step_epoch()
    out = slot(X)
    cached = slot.alpha.tensor(X)
    alpha_before = slot.alpha.to_dict()
    with slot.force_alpha(0.0):
        assert torch.equal(slot(X), X)
        assert slot.alpha.to_dict() == alpha_before
    assert slot.alpha.to_dict() == alpha_before
    assert slot.alpha.tensor(X) is cached  # the cached alpha was not evicted
    assert torch.equal(slot(X), out)


def test_force_alpha_restores_after_an_error() -> None:
    slot = fast_slot(S.HOLDING)
    perturb(slot)
    out = slot(X)
    with pytest.raises(RuntimeError, match="boom"), slot.force_alpha(0.3):
        raise RuntimeError("boom")
    assert torch.equal(slot(X), out)
    with slot.force_alpha(0.0):  # usable again: the first context was closed
        assert torch.equal(slot(X), X)


def test_force_alpha_does_not_nest() -> None:
    slot = fast_slot(S.HOLDING)
    perturb(slot)
    with slot.force_alpha(0.0):
        with pytest.raises(LifecycleError, match="does not nest"), slot.force_alpha(1.0):
            pass
        assert torch.equal(slot(X), X)  # the outer value is still in force


def test_force_alpha_per_sample() -> None:
    slot = fast_slot(S.HOLDING)
    perturb(slot)
    full = slot(X)
    with slot.force_alpha(torch.tensor([0.0, 1.0, 0.0])):
        out = slot(X)
    assert torch.equal(out[0], X[0]) and torch.equal(out[2], X[2])
    assert torch.allclose(out[1], full[1])


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.5", torch.tensor([[0.5]]), torch.tensor([1])])
def test_force_alpha_rejects_bad_values(value: object) -> None:
    slot = fast_slot(S.HOLDING)
    with pytest.raises(LifecycleError, match="force_alpha"), slot.force_alpha(value):  # type: ignore[arg-type]
        pass
    assert not slot.alpha.forced


@pytest.mark.parametrize("stage", [S.GERMINATED, S.PRUNED])
def test_force_alpha_needs_a_running_seed(stage: SeedStage) -> None:
    slot = fast_slot(S.GERMINATED)
    if stage == S.PRUNED:
        slot.prune("x")
    with pytest.raises(LifecycleError, match=f"stage is {stage.name}"), slot.force_alpha(0.0):
        pass
    with pytest.raises(LifecycleError, match="DORMANT"), new_slot().force_alpha(0.0):
        pass


# ---------------------------------------------------------------- counters


def test_epoch_counters() -> None:
    slot = new_slot()
    slot.step_epoch()
    assert slot.tick == 1 and slot.state is None
    slot.germinate("noop")
    slot.step_epoch()
    slot.step_epoch()
    assert slot.state is not None
    assert slot.state.metrics.epochs_in_stage == 2 and slot.state.metrics.epochs_total == 2
    slot.advance()
    assert slot.state.metrics.epochs_in_stage == 0 and slot.state.metrics.epochs_total == 2
    assert slot.tick == 3 and slot.state.history[-1].tick == 3


def test_stage_start_accuracy_is_taken_at_each_transition() -> None:
    slot = new_slot(FAST)
    slot.record_accuracy(0.3)  # dormant: nothing to record into
    slot.germinate("noop")
    slot.record_accuracy(0.4)
    assert slot.state is not None and slot.state.metrics.accuracy_at_germination == 0.4
    slot.advance()
    slot.record_accuracy(0.5)
    assert slot.state.metrics.improvement_points() == pytest.approx(10.0)
    assert slot.state.metrics.total_improvement_points() == pytest.approx(10.0)
    slot.advance()
    assert slot.state.metrics.improvement_points() == 0.0
