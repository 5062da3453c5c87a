"""The lifecycle rulebook, the slot, the executor and the masks agree, for every stage x op.

Random lifecycle sequences (hypothesis) walk a small model through every stage, scheduled
prunes and running ramps included. At each step, for every slot and op, the op is tried on
a deep copy: the slot accepts it (no LifecycleError, and a gated move's gate passes) exactly
when the rulebook allows it and its gate passes, exactly when the executor's check is None,
and exactly when the masks admit it. Growth limits are set out of reach so only the
lifecycle decides.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from esper.contracts.actions import Op
from esper.contracts.alpha import ALPHA_TARGETS, AlphaCurve
from esper.contracts.gates import GateResult
from esper.contracts.lifecycle import ADVANCE_TARGET, FOSSILIZE_FROM, GATE_FOR_TARGET, RETARGET_STAGES
from esper.contracts.stages import VALID_TRANSITIONS, SeedStage, is_active
from esper.control.decision import Decision
from esper.control.execute import check as executor_check
from esper.control.legality import GrowthLimits, slot_allows
from esper.growth_rl.masks import build_masks
from esper.hosts import CNNHost, CNNHostConfig
from esper.model import MorphogeneticModel
from esper.seeds import GateConfig, LifecycleError
from esper.seeds.gates import evaluate_gate
from esper.seeds.rules import check

BLUEPRINTS = ["conv_light", "norm"]
UNLIMITED = GrowthLimits(max_seeds=99, max_added_params=10**9)
SLOT_OPS = (Op.GERMINATE, Op.ADVANCE, Op.FOSSILIZE, Op.PRUNE)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(permissive: bool) -> MorphogeneticModel:
    torch.manual_seed(0)
    host = CNNHost(CNNHostConfig(in_channels=1, num_classes=3, widths=[4, 8], spatial_dims=1))
    return MorphogeneticModel(host, gates=GateConfig(permissive=permissive, g2_min_epochs=1, g3_min_epochs=1))


def decision_for(op: Op, sid: str, alpha_target: float = 1.0) -> Decision:
    if op == Op.GERMINATE:
        return Decision(op, slot=sid, blueprint=BLUEPRINTS[0], blend_steps=2)
    return Decision(op, slot=sid, alpha_target=alpha_target, alpha_steps=2)


def run_op(model: MorphogeneticModel, decision: Decision) -> bool:
    """Whether the slot accepts the decision: no LifecycleError and, for a gated move, the gate passes."""
    sid = decision.slot
    assert sid is not None
    actions: dict[Op, Callable[[], object]] = {
        Op.GERMINATE: lambda: model.germinate(sid, BLUEPRINTS[0], blend_steps=2),
        Op.ADVANCE: lambda: model.advance(sid),
        Op.FOSSILIZE: lambda: model.fossilize(sid),
        Op.PRUNE: lambda: model.prune(sid, "test", steps=2),
        Op.SET_ALPHA_TARGET: lambda: model.set_alpha_target(sid, decision.alpha_target, steps=2),
    }
    try:
        result = actions[decision.op]()
    except LifecycleError:
        return False
    return not isinstance(result, GateResult) or result.passed


def assert_agreement(model: MorphogeneticModel) -> None:
    masks = build_masks(model, BLUEPRINTS, UNLIMITED)
    for row, sid in enumerate(model.slot_ids()):
        slot = model.slot(sid)
        for op in SLOT_OPS:
            verdict = check(op, slot)
            rulebook = verdict.allowed and (
                verdict.gated_target is None
                or evaluate_gate(verdict.gated_target, slot.state, slot.alpha, slot.gate_config).passed
            )
            decision = decision_for(op, sid)
            accepted = run_op(copy.deepcopy(model), decision)
            where = f"{sid} {slot.stage.name} {op.name}: {verdict.reason}"
            assert accepted == rulebook, where
            assert slot_allows(model, sid, op, BLUEPRINTS, UNLIMITED) == accepted, where
            assert (executor_check(model, decision, BLUEPRINTS, UNLIMITED) is None) == accepted, where
            assert bool(masks.slot_by_op[int(op), row]) == accepted, where
        for column, target in enumerate(ALPHA_TARGETS):
            decision = decision_for(Op.SET_ALPHA_TARGET, sid, target)
            verdict = check(Op.SET_ALPHA_TARGET, slot, alpha_target=target)
            accepted = run_op(copy.deepcopy(model), decision)
            where = f"{sid} {slot.stage.name} SET_ALPHA_TARGET {target}: {verdict.reason}"
            assert verdict.allowed == accepted, where
            assert (executor_check(model, decision, BLUEPRINTS, UNLIMITED) is None) == accepted, where
            assert bool(masks.alpha_target_by_slot[row, column]) == accepted, where


# Each step: a slot, and a choice among what that slot accepts now plus a tick and a
# measurement. Walking legal moves reaches the deep stages; the refused ones are all
# tried anyway, on copies, by assert_agreement at every step.
STEPS = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 99), st.sampled_from((0, 2))), min_size=1, max_size=40)


def walk_options(model: MorphogeneticModel, sid: str, speed: int) -> list[Callable[[], object]]:
    slot = model.slot(sid)
    options: list[Callable[[], object]] = [model.step_epoch, model.step_epoch]
    if slot.state is not None:
        options.append(lambda: slot.record_contribution(2.0))
        options.append(lambda: slot.record_contribution(-1.0))
    if slot_allows(model, sid, Op.GERMINATE, BLUEPRINTS, UNLIMITED):
        options.append(lambda: model.germinate(sid, BLUEPRINTS[speed // 2], blend_steps=speed))
    if slot_allows(model, sid, Op.ADVANCE, BLUEPRINTS, UNLIMITED):
        options += [lambda: model.advance(sid)] * 3
    if slot_allows(model, sid, Op.FOSSILIZE, BLUEPRINTS, UNLIMITED):
        options.append(lambda: model.fossilize(sid))
    if slot_allows(model, sid, Op.PRUNE, BLUEPRINTS, UNLIMITED):
        options.append(lambda: model.prune(sid, "walk", steps=speed))
    for target in ALPHA_TARGETS:
        if check(Op.SET_ALPHA_TARGET, slot, alpha_target=target).allowed:
            options.append(lambda t=target: model.set_alpha_target(sid, t, steps=speed, curve=AlphaCurve.LINEAR))
    return options


# Strict G2 needs measurements this walk does not make, so strict runs stop in TRAINING.
@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(permissive=st.sampled_from((True, True, False)), steps=STEPS)
def test_rulebook_slot_executor_and_masks_agree(permissive: bool, steps: list[tuple[int, int, int]]) -> None:
    model = tiny_model(permissive)
    slot_ids = model.slot_ids()
    assert_agreement(model)
    for index, choice, speed in steps:
        sid = slot_ids[index % len(slot_ids)]
        options = walk_options(model, sid, speed)
        options[choice % len(options)]()  # only accepted moves: a LifecycleError here fails the test
        assert_agreement(model)
        for slot in model.slots():
            event(f"stage {slot.stage.name}{' prune scheduled' if slot.pending_prune_reason else ''}")


def test_tables_agree_with_the_transitions() -> None:
    for source, target in ADVANCE_TARGET.items():
        assert target in VALID_TRANSITIONS[source] and target in GATE_FOR_TARGET
    assert SeedStage.FOSSILIZED in VALID_TRANSITIONS[FOSSILIZE_FROM]
    assert FOSSILIZE_FROM not in ADVANCE_TARGET  # HOLDING leaves by FOSSILIZE, never ADVANCE
    assert all(is_active(stage) for stage in RETARGET_STAGES)


def test_a_refusal_names_its_reason() -> None:
    model = tiny_model(permissive=True)
    slot = model.slot(model.slot_ids()[0])
    verdict = check(Op.ADVANCE, slot)
    assert not verdict.allowed and verdict.reason == "cannot advance: the slot is DORMANT (no seed)"
    with pytest.raises(LifecycleError, match=re.escape(f"slot {slot.slot_id}: {verdict.reason}")):
        slot.advance()
    why = executor_check(model, Decision(Op.ADVANCE, slot=slot.slot_id), BLUEPRINTS, UNLIMITED)
    assert why is not None and why.endswith(verdict.reason)
    with pytest.raises(ValueError, match="alpha_target"):
        check(Op.SET_ALPHA_TARGET, slot)
