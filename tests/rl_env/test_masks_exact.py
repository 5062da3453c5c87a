"""The masks are exact: everything they admit executes, and everything they refuse is refused
(except germinations that fit the budget only without GATE's blend gate, see check_exact).

Random lifecycle states come from hypothesis: random limits, gate modes and
measurements, and a random walk of admitted actions with epoch ticks.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esper.blueprints import default_registry
from esper.contracts.actions import ALPHA_CURVE_CHOICES, ALPHA_SPEEDS, TEMPO_EPOCHS, ActionSpace, FactoredAction, Op
from esper.contracts.alpha import ALPHA_TARGETS
from esper.control.decision import Decision
from esper.control.execute import check, execute
from esper.control.legality import GrowthLimits, legal_blueprints
from esper.growth_rl.actions_decode import decode_action
from esper.growth_rl.masks import build_masks, check_admitted, wait_only_masks
from esper.hosts import CNNHost, CNNHostConfig
from esper.model import MorphogeneticModel
from esper.rl.policy import RecurrentActorCritic
from esper.seeds.gates import GateConfig

BLUEPRINTS = ["conv_light", "conv_heavy", "attention", "norm", "depthwise"]


def tiny_model(permissive: bool) -> MorphogeneticModel:
    torch.manual_seed(0)
    host = CNNHost(CNNHostConfig(in_channels=1, num_classes=3, widths=[4, 4, 8], spatial_dims=1))
    return MorphogeneticModel(host, gates=GateConfig(permissive=permissive))


def copy_model(model: MorphogeneticModel) -> MorphogeneticModel:
    registry = default_registry()
    return copy.deepcopy(model, memo={id(registry): registry})


def random_action(rng: np.random.Generator, op: Op, slot: int, blueprint: int, target: int) -> FactoredAction:
    return FactoredAction(
        op=int(op),
        slot=slot,
        blueprint=blueprint,
        style=int(rng.integers(4)),
        tempo=int(rng.integers(len(TEMPO_EPOCHS))),
        alpha_target=target,
        alpha_speed=int(rng.integers(len(ALPHA_SPEEDS))),
        alpha_curve=int(rng.integers(len(ALPHA_CURVE_CHOICES))),
    )


def candidates(rng: np.random.Generator, n_slots: int) -> Iterator[FactoredAction]:
    """Every (op, slot, blueprint | target) combination, with random choices for the other heads."""
    for op in Op:
        for slot in range(n_slots):
            if op == Op.GERMINATE:
                for bp in range(len(BLUEPRINTS)):
                    yield random_action(rng, op, slot, bp, int(rng.integers(len(ALPHA_TARGETS))))
            elif op == Op.SET_ALPHA_TARGET:
                for target in range(len(ALPHA_TARGETS)):
                    yield random_action(rng, op, slot, 0, target)
            else:
                yield random_action(rng, op, slot, 0, 0)


def pick_move(rng: np.random.Generator, actions: list[FactoredAction]) -> FactoredAction:
    """A random admitted action; prunes and retargets are rare so seeds live long enough to go deep."""
    rare = {Op.PRUNE: 0.05, Op.SET_ALPHA_TARGET: 0.1}
    weights = np.array([rare[Op(a.op)] if a.op in rare else 1.0 for a in actions])
    return actions[int(rng.choice(len(actions), p=weights / weights.sum()))]


def admitted(masks: object, action: FactoredAction) -> bool:
    try:
        check_admitted(masks, action)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def perturb_measurements(model: MorphogeneticModel, rng: np.random.Generator, accuracy: float) -> None:
    for slot in model.slots():
        if slot.state is None:
            continue
        slot.record_accuracy(accuracy)
        if rng.random() < 0.8:
            slot.state.metrics.gradient_ratio = float(rng.uniform(0.0, 0.4))
        if slot.alpha.alpha > 0.0 and rng.random() < 0.8:
            slot.record_contribution(float(rng.uniform(-2.0, 4.0)))


def check_exact(model: MorphogeneticModel, limits: GrowthLimits, rng: np.random.Generator) -> list[FactoredAction]:
    """Assert admitted <=> executable for every candidate; return the admitted ones."""
    masks = build_masks(model, BLUEPRINTS, limits)
    space = ActionSpace(len(model.slot_ids()), len(BLUEPRINTS))
    masks.apply(lambda t: t.unsqueeze(0)).validate(space)
    slot_ids = model.slot_ids()
    admitted_actions = [FactoredAction(0, 0, 0, 0, 0, 0, 0, 0)]
    assert admitted(masks, admitted_actions[0])  # WAIT is always allowed
    for action in candidates(rng, len(slot_ids)):
        decision = decode_action(action, slot_ids, BLUEPRINTS)
        executable = check(model, decision, BLUEPRINTS, limits) is None
        if admitted(masks, action) != executable:
            # The one allowed difference: the masks pick blueprint and blend style apart, so they admit
            # a blueprint only if it fits the budget with every style (GATE's gate included); one that
            # fits only without the gate is executable with ADD/MULTIPLY but masked out.
            assert executable and decision.op == Op.GERMINATE and decision.slot is not None, (
                action, decision, check(model, decision, BLUEPRINTS, limits)
            )
            assert decision.blueprint not in legal_blueprints(model, decision.slot, BLUEPRINTS, limits)
            continue
        if executable and action.op != Op.WAIT:
            admitted_actions.append(action)
    for action in admitted_actions:
        trial = copy_model(model)
        outcome = execute(trial, decode_action(action, slot_ids, BLUEPRINTS), BLUEPRINTS, limits)
        assert outcome.executed, (action, outcome)
    # op-level exactness: an op is admitted iff some candidate with it executes
    for op in Op:
        assert bool(masks.op[op]) == any(a.op == op for a in admitted_actions), op
    return admitted_actions


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    max_seeds=st.integers(0, 3),
    budget=st.sampled_from([0, 50, 120, 400, 5000]),
    permissive=st.booleans(),
    epochs=st.integers(4, 22),
)
def test_masks_admit_exactly_the_executable_actions(
    seed: int, max_seeds: int, budget: int, permissive: bool, epochs: int
) -> None:
    rng = np.random.default_rng(seed)
    model = tiny_model(permissive)
    limits = GrowthLimits(max_seeds=max_seeds, max_added_params=budget)
    accuracy = 0.3
    for _ in range(epochs):
        accuracy = float(np.clip(accuracy + rng.normal(0.01, 0.02), 0.0, 1.0))
        perturb_measurements(model, rng, accuracy)
        actions = check_exact(model, limits, rng)
        chosen = pick_move(rng, actions)
        outcome = execute(model, decode_action(chosen, model.slot_ids(), BLUEPRINTS), BLUEPRINTS, limits)
        assert outcome.executed
        model.step_epoch()


def test_the_random_walk_reaches_every_op() -> None:
    """Not vacuous: across a few walks the admitted actions cover every op."""
    reached: set[int] = set()
    for seed in range(4):
        rng = np.random.default_rng(seed)
        model = tiny_model(permissive=True)
        limits = GrowthLimits(max_seeds=2, max_added_params=5000)
        for epoch in range(25):
            perturb_measurements(model, rng, 0.3 + 0.01 * epoch)
            actions = check_exact(model, limits, rng)
            reached.update(a.op for a in actions)
            chosen = pick_move(rng, actions)
            assert execute(model, decode_action(chosen, model.slot_ids(), BLUEPRINTS), BLUEPRINTS, limits).executed
            model.step_epoch()
    assert reached == {int(op) for op in Op}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_policy_samples_only_executable_actions(seed: int) -> None:
    """Actions sampled by a (random) policy over the masks always execute."""
    rng = np.random.default_rng(seed)
    model = tiny_model(permissive=True)
    limits = GrowthLimits(max_seeds=3, max_added_params=5000)
    space = ActionSpace(len(model.slot_ids()), len(BLUEPRINTS))
    torch.manual_seed(seed)
    policy = RecurrentActorCritic(4, space, hidden=8, lstm_hidden=8, head_hidden=8)
    generator = torch.Generator().manual_seed(seed)
    state = policy.initial_state(1)
    executed_ops: set[str] = set()
    for epoch in range(30):
        perturb_measurements(model, rng, 0.3 + 0.01 * epoch)
        masks = build_masks(model, BLUEPRINTS, limits)
        out = policy.act(torch.randn(1, 4, generator=generator) * 5, state, masks.apply(lambda t: t.unsqueeze(0)),
                         generator=generator)
        state = out.state
        action = FactoredAction.from_indices(out.actions[0].tolist())
        check_admitted(masks, action)
        decision = decode_action(action, model.slot_ids(), BLUEPRINTS)
        outcome = execute(model, decision, BLUEPRINTS, limits)
        assert outcome.executed, (epoch, decision, outcome)
        executed_ops.add(decision.op.name)
        model.step_epoch()
    assert len(executed_ops) >= 3, executed_ops


def test_check_admitted_names_the_refused_head() -> None:
    model = tiny_model(permissive=False)
    limits = GrowthLimits(max_seeds=1, max_added_params=5000)
    masks = build_masks(model, BLUEPRINTS, limits)
    with pytest.raises(ValueError, match="op ADVANCE is not allowed"):
        check_admitted(masks, FactoredAction(int(Op.ADVANCE), 0, 0, 0, 0, 0, 0, 0))
    assert execute(model, Decision(Op.GERMINATE, slot="r0c0", blueprint="norm"), BLUEPRINTS, limits).executed
    masks = build_masks(model, BLUEPRINTS, limits)
    with pytest.raises(ValueError, match="op GERMINATE is not allowed"):  # max_seeds reached
        check_admitted(masks, FactoredAction(int(Op.GERMINATE), 1, 0, 0, 0, 0, 0, 0))
    with pytest.raises(ValueError, match="slot 1 is not allowed for PRUNE"):
        check_admitted(masks, FactoredAction(int(Op.PRUNE), 1, 0, 0, 0, 0, 0, 0))
    space = ActionSpace(len(model.slot_ids()), len(BLUEPRINTS))
    only_wait = wait_only_masks(space)
    check_admitted(only_wait, FactoredAction(0, 2, 4, 3, 2, 2, 3, 4))
    with pytest.raises(ValueError, match="op PRUNE is not allowed"):
        check_admitted(only_wait, FactoredAction(int(Op.PRUNE), 0, 0, 0, 0, 0, 0, 0))


def test_retarget_mask_depends_on_the_slot() -> None:
    """A HOLDING seed at alpha 1.0 may not retarget to 1.0; a BLENDING seed at rest may."""
    model = tiny_model(permissive=True)
    limits = GrowthLimits(max_seeds=3, max_added_params=5000)
    for sid in ("r0c0", "r0c1"):
        model.germinate(sid, "norm", blend_steps=0)
        model.advance(sid)
        model.step_epoch()
        model.step_epoch()
        model.step_epoch()
        assert model.advance(sid).passed  # -> BLENDING, ramp of 0 steps: alpha jumps to 1
    assert model.advance("r0c0").passed  # -> HOLDING at alpha 1.0
    masks = build_masks(model, BLUEPRINTS, limits)
    one = ALPHA_TARGETS.index(1.0)
    assert bool(masks.op[Op.SET_ALPHA_TARGET])
    assert masks.alpha_target_by_slot[0].tolist() == [t != 1.0 for t in ALPHA_TARGETS]  # HOLDING r0c0
    assert masks.alpha_target_by_slot[1].tolist() == [True] * len(ALPHA_TARGETS)  # BLENDING r0c1
    assert not bool(masks.alpha_target_by_slot[2].any())  # DORMANT r0c2
    assert not admitted(masks, FactoredAction(int(Op.SET_ALPHA_TARGET), 0, 0, 0, 0, one, 0, 0))
    assert admitted(masks, FactoredAction(int(Op.SET_ALPHA_TARGET), 1, 0, 0, 0, one, 0, 0))
    assert admitted(masks, FactoredAction(int(Op.GERMINATE), 2, 0, 0, 0, one, 0, 0))  # plain mask
