"""Which lifecycle actions are executable right now: the single source of truth.

The executor refuses exactly what these functions call illegal, the random
controller samples only legal actions, and the learned policy's masks are
built from them — so masks are exact (the reference's were "optimistic").
ADVANCE and FOSSILIZE are legal only when their gate would pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from esper.contracts.actions import Op
from esper.contracts.alpha import ALPHA_TARGETS, AlphaAlgorithm, AlphaMode
from esper.contracts.stages import SeedStage, is_active
from esper.model import MorphogeneticModel
from esper.seeds.blending import blend_param_count
from esper.seeds.gates import GATE_FOR_TARGET, evaluate_gate
from esper.seeds.slot import SeedSlot

_ADVANCE_TARGET = {
    SeedStage.GERMINATED: SeedStage.TRAINING,
    SeedStage.TRAINING: SeedStage.BLENDING,
    SeedStage.BLENDING: SeedStage.HOLDING,
}


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
    if not slot.is_free:
        return []
    room = limits.max_added_params - model.param_counts().seeds
    registry = slot.registry
    return [
        b
        for b in blueprints
        if registry.unavailable_reason(b, slot.shape) is None
        and germination_cost(slot, b, alpha_algorithm) <= room
    ]


def _ramp_at_rest(slot: SeedSlot) -> bool:
    return slot.alpha.mode == AlphaMode.HOLD


def legal_alpha_targets(slot: SeedSlot) -> list[float]:
    if slot.state is None or slot.pending_prune_reason is not None or not _ramp_at_rest(slot):
        return []
    if slot.stage == SeedStage.BLENDING:
        return list(ALPHA_TARGETS)
    if slot.stage == SeedStage.HOLDING:
        return [t for t in ALPHA_TARGETS if t != slot.alpha.alpha]
    return []


def slot_allows(
    model: MorphogeneticModel,
    slot_id: str,
    op: Op,
    blueprints: list[str],
    limits: GrowthLimits,
    alpha_algorithm: AlphaAlgorithm | None = None,
) -> bool:
    """Whether `op` is executable on the slot now (`alpha_algorithm`: GERMINATE's, see legal_blueprints)."""
    slot = model.slot(slot_id)
    stage = slot.stage
    if op == Op.WAIT:
        return True
    if op == Op.GERMINATE:
        return live_seed_count(model) < limits.max_seeds and bool(
            legal_blueprints(model, slot_id, blueprints, limits, alpha_algorithm)
        )
    if slot.state is None or slot.pending_prune_reason is not None:
        return False
    if op == Op.PRUNE:
        return is_active(stage)
    if op == Op.SET_ALPHA_TARGET:
        return bool(legal_alpha_targets(slot))
    if op == Op.ADVANCE:
        target = _ADVANCE_TARGET.get(stage)
    elif op == Op.FOSSILIZE:
        target = SeedStage.FOSSILIZED if stage == SeedStage.HOLDING else None
    else:
        raise ValueError(f"op: unknown op {op!r}")
    if target is None:
        return False
    assert target in GATE_FOR_TARGET
    return evaluate_gate(target, slot.state, slot.alpha, slot.gate_config).passed


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
