"""A refused lifecycle action changes nothing, whatever the slot's state.

The lifecycle state machine drives slots only through states germinate can
create; here the slot's stored choices are also corrupted the way a caller
editing `slot.state` could (a negative blend_steps, a target outside the
allowed set, a ramp still running where the next stage expects HOLD), so the
failures surface late, inside the operation, after its first checks passed.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.contracts import SlotShape
from esper.contracts.alpha import ALPHA_TARGETS, AlphaAlgorithm, AlphaCurve, AlphaMode
from esper.contracts.stages import SeedStage
from esper.seeds import GateConfig, LifecycleError, SeedSlot
from esper.seeds.alpha_controller import AlphaControllerError

S = SeedStage
SHAPE = SlotShape("cnn", 8, spatial_dims=1)
FAST = GateConfig(permissive=True, g2_min_epochs=0)
ORDER = (S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED)


def driven(stage: SeedStage, algorithm: AlphaAlgorithm, blend_steps: int, ramp_left: bool) -> SeedSlot:
    torch.manual_seed(0)
    slot = SeedSlot("r0c1", SHAPE, gates=FAST)
    slot.germinate("conv_light", alpha_algorithm=algorithm, blend_steps=blend_steps)
    while slot.stage != stage:
        if slot.stage == S.BLENDING:
            while not slot.alpha.at_target:
                slot.step_epoch()
        if slot.stage == S.HOLDING:
            slot.record_contribution(2.0)
            assert slot.fossilize().passed
            continue
        assert slot.advance().passed
    if stage == S.BLENDING and not ramp_left:
        while not slot.alpha.at_target:
            slot.step_epoch()
    return slot


def snapshot(slot: SeedSlot) -> tuple[object, ...]:
    params = {name: (p.detach().clone(), p.requires_grad) for name, p in slot.named_parameters()}
    return copy.deepcopy(slot.lifecycle_state()), params, slot.stage


def same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    state_a, params_a, stage_a = a
    state_b, params_b, stage_b = b
    if state_a != state_b or stage_a != stage_b or params_a.keys() != params_b.keys():
        return False
    return all(torch.equal(params_a[k][0], params_b[k][0]) and params_a[k][1] == params_b[k][1] for k in params_a)


CORRUPTIONS = ("none", "negative_blend_steps", "bad_stored_target", "ramp_running")
OPS = ("advance", "fossilize", "prune", "set_alpha_target", "germinate")
numbers = st.sampled_from((0, 3, -1, 2.5, None))
targets = st.sampled_from((*ALPHA_TARGETS, 0.6, -1.0, 2.0))
steepness = st.sampled_from((12.0, 0.0, -3.0, float("nan")))


def corrupt(slot: SeedSlot, how: str) -> None:
    state = slot.state
    assert state is not None
    if how == "negative_blend_steps":
        slot.alpha.blend = replace(slot.alpha.blend, steps=-2)  # type: ignore[type-var]
    elif how == "bad_stored_target":
        slot.alpha.blend = replace(slot.alpha.blend, target=3.0)  # type: ignore[type-var]
    elif how == "ramp_running":
        # A ramp in progress where the slot's next move expects the ramp at rest.
        slot.alpha.mode = AlphaMode.UP
        slot.alpha.target = 1.0
        slot.alpha.steps_total = 4
        slot.alpha.steps_done = 1


@settings(max_examples=150, deadline=None)
@given(
    stage=st.sampled_from(ORDER),
    algorithm=st.sampled_from(tuple(AlphaAlgorithm)),
    blend_steps=st.sampled_from((0, 3)),
    ramp_left=st.booleans(),
    corruption=st.sampled_from(CORRUPTIONS),
    op=st.sampled_from(OPS),
    target=targets,
    steps=numbers,
    curve=st.sampled_from(tuple(AlphaCurve)),
    steep=steepness,
)
def test_refused_action_changes_nothing(
    stage: SeedStage,
    algorithm: AlphaAlgorithm,
    blend_steps: int,
    ramp_left: bool,
    corruption: str,
    op: str,
    target: float,
    steps: object,
    curve: AlphaCurve,
    steep: float,
) -> None:
    slot = driven(stage, algorithm, blend_steps, ramp_left)
    corrupt(slot, corruption)
    before = snapshot(slot)
    try:
        if op == "advance":
            result = slot.advance()
        elif op == "fossilize":
            result = slot.fossilize()
        elif op == "prune":
            slot.prune("test", steps=steps, curve=curve, steepness=steep)  # type: ignore[arg-type]
            result = None
        elif op == "set_alpha_target":
            slot.set_alpha_target(target, steps=steps, curve=curve, steepness=steep)  # type: ignore[arg-type]
            result = None
        else:
            result = slot.germinate("conv_light", blend_steps=steps, alpha_target=target)  # type: ignore[arg-type]
    except (LifecycleError, AlphaControllerError):
        assert same(before, snapshot(slot)), f"refused {op} changed the slot"
        return
    if result is not None and not result.passed:
        assert same(before, snapshot(slot)), f"{op} with a failed gate changed the slot"


def test_advance_into_blending_refused_by_the_ramp_leaves_training() -> None:
    """The reported case: the gate passes, the ramp is refused; the slot must stay in TRAINING."""
    slot = driven(S.TRAINING, AlphaAlgorithm.ADD, 3, False)
    slot.alpha.blend = replace(slot.alpha.blend, steps=-1)  # type: ignore[type-var]
    before = snapshot(slot)
    try:
        slot.advance()
    except LifecycleError as error:
        assert "cannot start blending" in str(error)
    else:
        raise AssertionError("advance with blend_steps -1 was not refused")
    assert slot.stage == S.TRAINING
    assert same(before, snapshot(slot))
