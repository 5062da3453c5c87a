"""FactoredAction (head indices) -> Decision (what the executor carries out).

Only the heads credited for the op (contracts.actions.HEAD_CREDIT) are read.
Two credited choices have no effect the executor can express, by design of
the current lifecycle (documented in docs/observations.md):
- GERMINATE: the style's ramp curve (the blend ramp after TRAINING is always
  linear); the style's blend operator is used.
- SET_ALPHA_TARGET: the style (a seed's blend operator is fixed at
  germination); the ramp curve comes from the alpha_curve head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from esper.contracts.actions import (
    ALPHA_CURVE_CHOICES,
    ALPHA_SPEEDS,
    BLEND_STYLE_ALPHA,
    TEMPO_EPOCHS,
    FactoredAction,
    Op,
)
from esper.contracts.alpha import ALPHA_TARGETS, AlphaCurve
from esper.control.decision import Decision
from esper.seeds.alpha_controller import DEFAULT_STEEPNESS

T = TypeVar("T")


def _index(sequence: Sequence[T], index: int, head: str) -> T:
    if not 0 <= index < len(sequence):
        raise ValueError(f"action {head}: index {index} out of range [0, {len(sequence)})")
    return sequence[index]


def _curve(index: int) -> tuple[AlphaCurve, float]:
    curve, steepness = _index(ALPHA_CURVE_CHOICES, index, "alpha_curve")
    # The table stores 0.0 for curves without a steepness; ramps need a positive one.
    return curve, (steepness if curve == AlphaCurve.SIGMOID else DEFAULT_STEEPNESS)


def decode_action(
    action: FactoredAction, slot_ids: Sequence[str], blueprints: Sequence[str], reason: str = "policy"
) -> Decision:
    """The Decision for `action` in a model with `slot_ids` and the given blueprint list."""
    if not isinstance(action, FactoredAction):
        raise ValueError(f"decode_action: expected a FactoredAction, got {type(action).__name__}")
    op = Op(action.op)
    if op == Op.WAIT:
        # No reason: GrowthRun reports a WAIT only when it carries one.
        return Decision(Op.WAIT)
    slot = _index(slot_ids, action.slot, "slot")
    why = f"{reason}: {op.name} on {slot}"
    if op == Op.GERMINATE:
        blueprint = _index(blueprints, action.blueprint, "blueprint")
        _, algorithm = BLEND_STYLE_ALPHA[action.blend_style]
        return Decision(
            op,
            slot=slot,
            blueprint=blueprint,
            alpha_algorithm=algorithm,
            blend_steps=_index(TEMPO_EPOCHS, action.tempo, "tempo"),
            alpha_target=_index(ALPHA_TARGETS, action.alpha_target, "alpha_target"),
            reason=f"{why} ({blueprint})",
        )
    if op in (Op.SET_ALPHA_TARGET, Op.PRUNE):
        steps = _index(ALPHA_SPEEDS, action.alpha_speed, "alpha_speed")
        curve, steepness = _curve(action.alpha_curve)
        target = 1.0
        if op == Op.SET_ALPHA_TARGET:
            target = _index(ALPHA_TARGETS, action.alpha_target, "alpha_target")
        return Decision(
            op, slot=slot, alpha_target=target, alpha_steps=steps, alpha_curve=curve, steepness=steepness,
            reason=why,
        )
    return Decision(op, slot=slot, reason=why)  # ADVANCE, FOSSILIZE: only the slot matters
