"""Decision (what a controller decided) -> FactoredAction (head indices): the inverse of actions_decode.

Used to record another controller's choices as actions of the policy's
action space (imitation of the heuristic before PPO, esper.growth_rl.imitation).
Every credited head gets the index that reproduces the decision; where the
decision leaves a credited head free (the style of a retarget, the ramp
curve of a germination: see actions_decode), the first index the masks
admit is used, so the encoded action is always executable. Heads that are
not credited for the op are 0: the environment and the update ignore them.
"""

from __future__ import annotations

from collections.abc import Sequence

from esper.contracts.actions import (
    ALPHA_CURVE_CHOICES,
    ALPHA_SPEEDS,
    BLEND_STYLE_ALPHA,
    HEADS,
    TEMPO_EPOCHS,
    FactoredAction,
    Op,
)
from esper.contracts.alpha import ALPHA_TARGETS, AlphaCurve
from esper.control.decision import Decision
from esper.growth_rl.masks import check_admitted
from esper.rl.distributions import ActionMasks


class UnencodableDecision(ValueError):
    """The decision has no equivalent in the factored action space."""


def _position(choices: Sequence[object], value: object, what: str, decision: Decision) -> int:
    if value not in choices:
        raise UnencodableDecision(
            f"{decision.op.name} {what} {value!r} is not one of the action choices {list(choices)}"
        )
    return list(choices).index(value)


def _style(decision: Decision) -> int:
    # The ramp after TRAINING is always linear, so a linear style of the same operator is exact.
    for style, (curve, algorithm) in BLEND_STYLE_ALPHA.items():
        if algorithm == decision.alpha_algorithm and curve == AlphaCurve.LINEAR:
            return int(style)
    for style, (_, algorithm) in BLEND_STYLE_ALPHA.items():
        if algorithm == decision.alpha_algorithm:
            return int(style)
    raise UnencodableDecision(f"GERMINATE alpha algorithm {decision.alpha_algorithm.name} has no blend style")


def _curve(decision: Decision) -> int:
    for index, (curve, steepness) in enumerate(ALPHA_CURVE_CHOICES):
        if curve == decision.alpha_curve and (curve != AlphaCurve.SIGMOID or steepness == decision.steepness):
            return index
    raise UnencodableDecision(
        f"{decision.op.name} alpha curve {decision.alpha_curve.name} (steepness {decision.steepness}) "
        f"is not one of the action choices"
    )


def _first_admitted(masks: ActionMasks, head: str, op: Op, slot: int) -> int:
    row = masks.alpha_target_by_slot[slot] if head == "alpha_target" and op == Op.SET_ALPHA_TARGET else getattr(
        masks, head
    )
    admitted = row.nonzero().flatten().tolist()
    if not admitted:
        raise UnencodableDecision(f"{op.name}: the masks admit no choice for head {head!r}")
    return int(admitted[0])


def encode_decision(
    decision: Decision, slot_ids: Sequence[str], blueprints: Sequence[str], masks: ActionMasks
) -> FactoredAction:
    """The executable FactoredAction for `decision`, given unbatched `masks` of the current state."""
    op = Op(decision.op)
    chosen: dict[str, int] = dict.fromkeys(HEADS, 0)
    chosen["op"] = int(op)
    if op != Op.WAIT:
        if decision.slot is None:
            raise UnencodableDecision(f"{op.name} decision names no slot")
        chosen["slot"] = _position(slot_ids, decision.slot, "slot", decision)
    if op == Op.GERMINATE:
        chosen["blueprint"] = _position(blueprints, decision.blueprint, "blueprint", decision)
        chosen["style"] = _style(decision)
        chosen["tempo"] = _position(TEMPO_EPOCHS, decision.blend_steps, "blend_steps", decision)
        chosen["alpha_target"] = _position(ALPHA_TARGETS, decision.alpha_target, "alpha_target", decision)
    elif op in (Op.SET_ALPHA_TARGET, Op.PRUNE):
        chosen["alpha_speed"] = _position(ALPHA_SPEEDS, decision.alpha_steps, "alpha_steps", decision)
        chosen["alpha_curve"] = _curve(decision)
        if op == Op.SET_ALPHA_TARGET:
            chosen["alpha_target"] = _position(ALPHA_TARGETS, decision.alpha_target, "alpha_target", decision)
            chosen["style"] = _first_admitted(masks, "style", op, chosen["slot"])
    action = FactoredAction.from_indices([chosen[name] for name in HEADS])
    try:
        check_admitted(masks, action)
    except ValueError as error:
        raise UnencodableDecision(f"{op.name} decision {decision.reason!r} is not executable now: {error}") from None
    return action


__all__ = ["UnencodableDecision", "encode_decision"]
