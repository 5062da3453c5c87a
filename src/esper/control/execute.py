"""Carry out a controller's Decision on the model, refusing what is illegal."""

from __future__ import annotations

from dataclasses import dataclass

from esper.contracts.actions import Op
from esper.contracts.gates import GateResult
from esper.control.decision import Decision
from esper.control.legality import GrowthLimits, legal_blueprints, refusal
from esper.model import MorphogeneticModel
from esper.seeds.rules import check as rulebook_check
from esper.seeds.sync import sync_decision


@dataclass(frozen=True)
class Outcome:
    executed: bool
    reason: str
    gate: GateResult | None = None


def check(
    model: MorphogeneticModel, decision: Decision, blueprints: list[str], limits: GrowthLimits
) -> str | None:
    """None when `decision` is executable now, else why not."""
    if decision.op == Op.WAIT:
        return None
    if decision.slot is None:
        return f"{decision.op.name} needs a slot"
    if decision.slot not in model.slot_ids():
        return f"unknown slot {decision.slot!r}"
    # A germination is costed with its own alpha algorithm (GATE adds a gate's parameters).
    algorithm = decision.alpha_algorithm if decision.op == Op.GERMINATE else None
    why = refusal(model, decision.slot, decision.op, blueprints, limits, algorithm)
    if why is not None:
        stage = model.slot(decision.slot).stage.name
        return f"{decision.op.name} is not allowed on {decision.slot} (stage {stage}): {why}"
    if decision.op == Op.GERMINATE and decision.blueprint not in legal_blueprints(
        model, decision.slot, blueprints, limits, algorithm
    ):
        return (
            f"blueprint {decision.blueprint!r} with {decision.alpha_algorithm.name} is not available "
            f"or does not fit the parameter budget"
        )
    if decision.op == Op.SET_ALPHA_TARGET:
        verdict = rulebook_check(Op.SET_ALPHA_TARGET, model.slot(decision.slot), alpha_target=decision.alpha_target)
        if not verdict.allowed:
            return f"alpha target {decision.alpha_target} is not allowed on {decision.slot} now: {verdict.reason}"
    return None


def execute(
    model: MorphogeneticModel, decision: Decision, blueprints: list[str], limits: GrowthLimits
) -> Outcome:
    # Legality (ADVANCE/FOSSILIZE: the gate) is judged once, on rank 0, under torchrun: a rank
    # that refused on its own evaluation would skip the collective the others enter.
    problem = sync_decision(check(model, decision, blueprints, limits))
    if problem is not None:
        return Outcome(False, problem)
    op, slot = decision.op, decision.slot
    if op == Op.WAIT:
        return Outcome(True, decision.reason or "wait")
    assert slot is not None
    if op == Op.GERMINATE:
        assert decision.blueprint is not None
        gate = model.germinate(
            slot,
            decision.blueprint,
            alpha_algorithm=decision.alpha_algorithm,
            blend_steps=decision.blend_steps,
            alpha_target=decision.alpha_target,
        )
        return Outcome(True, decision.reason, gate)
    if op == Op.ADVANCE:
        gate = model.advance(slot)
        return Outcome(gate.passed, decision.reason if gate.passed else gate.message, gate)
    if op == Op.FOSSILIZE:
        gate = model.fossilize(slot)
        return Outcome(gate.passed, decision.reason if gate.passed else gate.message, gate)
    if op == Op.PRUNE:
        model.prune(
            slot,
            decision.reason or "controller",
            steps=decision.alpha_steps,
            curve=decision.alpha_curve,
            steepness=decision.steepness,
        )
        return Outcome(True, decision.reason)
    model.set_alpha_target(
        slot,
        decision.alpha_target,
        steps=decision.alpha_steps,
        curve=decision.alpha_curve,
        steepness=decision.steepness,
    )
    return Outcome(True, decision.reason)
