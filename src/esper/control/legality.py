"""Which lifecycle actions are executable right now, for the executor, masks and controllers.

A slot's structural legality is the rulebook's (`esper.seeds.rules.check`, the same check
the slot enforces); this module adds only what the slot cannot know: the growth limits
(live seeds, parameter budget, which blueprints fit) and, for ADVANCE and FOSSILIZE, whether
the gate the rulebook names would pass now. The executor refuses exactly what these
functions call illegal, the random controller samples only legal actions, and the learned
policy's masks are built from them, so a masked-in action always executes.
"""

from __future__ import annotations

from dataclasses import dataclass

from esper.contracts.actions import Op
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.stages import SeedStage, is_active
from esper.model import MorphogeneticModel
from esper.seeds.blending import blend_param_count
from esper.seeds.gates import evaluate_gate
from esper.seeds.rules import check, legal_alpha_targets
from esper.seeds.slot import SeedSlot

__all__ = [
    "GrowthLimits",
    "germination_cost",
    "legal_alpha_targets",
    "legal_blueprints",
    "legal_ops",
    "legal_slots",
    "live_seed_count",
    "refusal",
    "slot_allows",
]


@dataclass(frozen=True)
class GrowthLimits:
    """How much a model may grow: live seeds (active or fossilized) and added parameters."""

    max_seeds: int
    max_added_params: int


def live_seed_count(model: MorphogeneticModel) -> int:
    return sum(1 for s in model.slots() if is_active(s.stage) or s.stage == SeedStage.FOSSILIZED)


def germination_cost(slot: SeedSlot, blueprint: str, alpha_algorithm: AlphaAlgorithm | None) -> int:
    """Exact parameters a germination adds: the blueprint's plus its blend operator's (GATE's gate).

    `alpha_algorithm=None` means "whichever algorithm is chosen later": the
    largest cost over all of them, so a choice made afterwards always fits.
    """
    algorithms = tuple(AlphaAlgorithm) if alpha_algorithm is None else (alpha_algorithm,)
    extra = max(blend_param_count(algorithm, slot.shape.width) for algorithm in algorithms)
    return slot.registry.param_count(blueprint, slot.shape) + extra


def legal_blueprints(
    model: MorphogeneticModel,
    slot_id: str,
    blueprints: list[str],
    limits: GrowthLimits,
    alpha_algorithm: AlphaAlgorithm | None = None,
) -> list[str]:
    """Blueprints that fit the remaining parameter budget in this (free) slot.

    The cost counts the blend gate GATE adds; with `alpha_algorithm=None` (the
    masks and the random controller, which pick the algorithm independently)
    a blueprint must fit with every algorithm.
    """
    slot = model.slot(slot_id)
    if not check(Op.GERMINATE, slot).allowed:
        return []
    room = limits.max_added_params - model.param_counts().seeds
    registry = slot.registry
    return [
        b
        for b in blueprints
        if registry.unavailable_reason(b, slot.shape) is None
        and germination_cost(slot, b, alpha_algorithm) <= room
    ]


def refusal(
    model: MorphogeneticModel,
    slot_id: str,
    op: Op,
    blueprints: list[str],
    limits: GrowthLimits,
    alpha_algorithm: AlphaAlgorithm | None = None,
) -> str | None:
    """None when `op` is executable on the slot now, else why not (`alpha_algorithm`: see legal_blueprints)."""
    slot = model.slot(slot_id)
    if op == Op.GERMINATE:
        verdict = check(op, slot)
        if not verdict.allowed:
            return verdict.reason
        if live_seed_count(model) >= limits.max_seeds:
            return f"the model already has {limits.max_seeds} live seeds"
        if not legal_blueprints(model, slot_id, blueprints, limits, alpha_algorithm):
            return "no blueprint is available here or fits the parameter budget"
        return None
    if op == Op.SET_ALPHA_TARGET:
        return None if legal_alpha_targets(slot) else "no alpha target is allowed now"
    verdict = check(op, slot)
    if not verdict.allowed:
        return verdict.reason
    if verdict.gated_target is None:
        return None
    assert slot.state is not None  # the rulebook allows a gated move only with a seed
    gate = evaluate_gate(verdict.gated_target, slot.state, slot.alpha, slot.gate_config)
    return None if gate.passed else f"gate {gate.gate.name} refuses: {gate.message}"


def slot_allows(
    model: MorphogeneticModel,
    slot_id: str,
    op: Op,
    blueprints: list[str],
    limits: GrowthLimits,
    alpha_algorithm: AlphaAlgorithm | None = None,
) -> bool:
    """Whether `op` is executable on the slot now (`alpha_algorithm`: GERMINATE's, see legal_blueprints)."""
    return refusal(model, slot_id, op, blueprints, limits, alpha_algorithm) is None


def legal_slots(
    model: MorphogeneticModel,
    op: Op,
    blueprints: list[str],
    limits: GrowthLimits,
    alpha_algorithm: AlphaAlgorithm | None = None,
) -> list[str]:
    return [sid for sid in model.slot_ids() if slot_allows(model, sid, op, blueprints, limits, alpha_algorithm)]


def legal_ops(model: MorphogeneticModel, blueprints: list[str], limits: GrowthLimits) -> list[Op]:
    """Ops with at least one slot where they are executable (WAIT always)."""
    return [op for op in Op if op == Op.WAIT or legal_slots(model, op, blueprints, limits)]
