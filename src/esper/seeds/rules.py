"""The lifecycle rulebook's one check: may this op run on this slot now, and if not why.

The slot enforces it (each lifecycle method raises `LifecycleError` with the verdict's
reason), and the executor, the masks, the random controller and the heuristic ask it
through `esper.control.legality`. It decides structural legality only; the gate named by
`GATE_FOR_TARGET[verdict.gated_target]` decides, from metrics, whether an allowed
ADVANCE or FOSSILIZE passes. Growth limits (seed count, parameter budget) are the
controller's business and live in `esper.control.legality`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from esper.contracts.actions import Op
from esper.contracts.alpha import ALPHA_TARGETS, AlphaMode
from esper.contracts.lifecycle import (
    ADVANCE_TARGET,
    FOSSILIZE_FROM,
    FOSSILIZE_TARGET,
    RETARGET_STAGES,
    Verdict,
)
from esper.contracts.stages import is_active

if TYPE_CHECKING:
    from esper.seeds.slot import SeedSlot

_ALLOWED = Verdict(True, "allowed")

# How a refusal names each op that needs a seed.
_ACTION = {
    Op.ADVANCE: "advance",
    Op.FOSSILIZE: "fossilize",
    Op.PRUNE: "prune",
    Op.SET_ALPHA_TARGET: "set the alpha target",
}


def _refuse(reason: str) -> Verdict:
    return Verdict(False, reason)


def check(op: Op, slot: SeedSlot, *, alpha_target: float | None = None) -> Verdict:
    """The verdict on `op` for `slot` now. SET_ALPHA_TARGET needs the `alpha_target` asked for."""
    if op == Op.WAIT:
        return _ALLOWED
    state = slot.state
    if op == Op.GERMINATE:
        if state is not None:
            return _refuse(f"cannot germinate: stage is {slot.stage.name}, not DORMANT")
        return _ALLOWED
    if op not in _ACTION:
        raise ValueError(f"op: unknown op {op!r}")
    if op == Op.SET_ALPHA_TARGET and alpha_target is None:
        raise ValueError("alpha_target: SET_ALPHA_TARGET is judged for a given target, got None")
    if state is None:
        return _refuse(f"cannot {_ACTION[op]}: the slot is DORMANT (no seed)")
    stage, pending = slot.stage, slot.pending_prune_reason is not None
    if op == Op.ADVANCE:
        if pending:
            return _refuse("cannot advance: a scheduled prune is in progress")
        target = ADVANCE_TARGET.get(stage)
        if stage == FOSSILIZE_FROM:
            return _refuse(f"cannot advance from {stage.name}: it leaves by FOSSILIZE, PRUNE or a new alpha target")
        if target is None:
            return _refuse(f"cannot advance from {stage.name}")
        return Verdict(True, "allowed", target)
    if op == Op.FOSSILIZE:
        if stage != FOSSILIZE_FROM:
            return _refuse(f"cannot fossilize from {stage.name}, only from {FOSSILIZE_FROM.name}")
        if pending:
            return _refuse("cannot fossilize: a scheduled prune is in progress")
        return Verdict(True, "allowed", FOSSILIZE_TARGET)
    if op == Op.PRUNE:
        if not is_active(stage):
            return _refuse(f"cannot prune from {stage.name}")
        if pending:
            return _refuse("a scheduled prune is already in progress")
        return _ALLOWED
    # SET_ALPHA_TARGET
    if stage not in RETARGET_STAGES:
        names = " or ".join(s.name for s in RETARGET_STAGES)
        return _refuse(f"alpha target can change only in {names}, not {stage.name}")
    if pending:
        return _refuse("cannot retarget during a scheduled prune")
    if alpha_target not in ALPHA_TARGETS:
        return _refuse(f"alpha target must be one of {ALPHA_TARGETS}, got {alpha_target!r}")
    if slot.alpha.mode != AlphaMode.HOLD:
        return _refuse(f"alpha is still ramping ({slot.alpha.mode.name}); retarget only from HOLD")
    if stage == FOSSILIZE_FROM and alpha_target == slot.alpha.alpha:
        # From HOLDING a retarget is a move back to BLENDING; to the alpha it already holds it
        # would be a blend that goes nowhere.
        return _refuse(f"alpha is already {alpha_target}")
    return _ALLOWED


def legal_alpha_targets(slot: SeedSlot) -> list[float]:
    """The alpha targets SET_ALPHA_TARGET accepts on `slot` now, in `ALPHA_TARGETS` order."""
    return [t for t in ALPHA_TARGETS if check(Op.SET_ALPHA_TARGET, slot, alpha_target=t).allowed]
