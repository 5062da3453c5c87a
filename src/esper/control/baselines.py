"""Baseline controllers: static (never grows) and random (uniform over legal actions).

Also the argument checks every controller shares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from esper.checkpoints.controller_state import CONTROLLER_WHERE, RandomState, StaticState
from esper.checkpoints.errors import CheckpointError
from esper.checkpoints.strict import validate
from esper.contracts.actions import (
    ALPHA_CURVE_CHOICES,
    ALPHA_SPEEDS,
    BLEND_STYLE_ALPHA,
    TEMPO_EPOCHS,
    BlendStyle,
    Op,
)
from esper.contracts.alpha import ALPHA_TARGETS, AlphaCurve
from esper.control.decision import Decision, EpochSignals
from esper.control.legality import (
    GrowthLimits,
    legal_alpha_targets,
    legal_blueprints,
    legal_ops,
    legal_slots,
)
from esper.model import MorphogeneticModel
from esper.seeds.alpha_controller import DEFAULT_STEEPNESS

T = TypeVar("T")

_STYLES: tuple[BlendStyle, ...] = tuple(BlendStyle)


def check_blueprints(blueprints: list[str]) -> None:
    """A controller's blueprint list: a non-empty list of unique, non-empty names."""
    if not isinstance(blueprints, list) or not blueprints:
        raise ValueError(f"blueprints: expected a non-empty list of names, got {blueprints!r}")
    for name in blueprints:
        if not isinstance(name, str) or not name:
            raise ValueError(f"blueprints: expected non-empty strings, got {name!r}")
    if len(set(blueprints)) != len(blueprints):
        raise ValueError(f"blueprints: names must be unique, got {blueprints}")


def check_limits(limits: GrowthLimits) -> None:
    if not isinstance(limits, GrowthLimits):
        raise ValueError(f"limits: expected GrowthLimits, got {type(limits).__name__}")
    for field in ("max_seeds", "max_added_params"):
        value = getattr(limits, field)
        if type(value) is not int or value < 0:
            raise ValueError(f"limits.{field}: expected an int >= 0, got {value!r}")


def check_decide_args(signals: EpochSignals, model: object) -> None:
    if not isinstance(signals, EpochSignals):
        raise ValueError(f"decide signals: expected EpochSignals, got {type(signals).__name__}")
    if not isinstance(model, MorphogeneticModel):
        raise ValueError(f"decide model: expected a MorphogeneticModel, got {type(model).__name__}")


class StaticController:
    """Never grows: the host trained alone, the baseline every growth run is compared with."""

    name = "static"

    def decide(self, signals: EpochSignals, model: object) -> Decision:
        check_decide_args(signals, model)
        return Decision(Op.WAIT, reason="static controller: never grows")

    def state_dict(self) -> dict[str, object]:
        return {}

    def load_state_dict(self, state: object) -> None:
        """Strict: the stored state must be an empty dict (CheckpointError otherwise)."""
        if type(state) is dict and state:
            raise CheckpointError.many(
                (f"{CONTROLLER_WHERE} > {key}", "unknown key (the static controller keeps no state)") for key in state
            )
        validate(StaticState, state, CONTROLLER_WHERE)


class RandomController:
    """Uniformly random *legal* actions: WAIT with `wait_probability`, else a uniform legal op,
    then uniform over that op's legal slots and its other choices (contract tables).

    Deterministic given `seed`; `state_dict` captures the generator so a resumed
    run draws exactly the numbers an uninterrupted one would.
    """

    name = "random"

    def __init__(
        self, blueprints: list[str], limits: GrowthLimits, seed: int, wait_probability: float = 0.5
    ) -> None:
        check_blueprints(blueprints)
        check_limits(limits)
        if type(seed) is not int or seed < 0:
            raise ValueError(f"RandomController seed: expected an int >= 0, got {seed!r}")
        if (
            isinstance(wait_probability, bool)
            or not isinstance(wait_probability, int | float)
            or not (math.isfinite(wait_probability) and 0.0 <= wait_probability <= 1.0)
        ):
            raise ValueError(
                f"RandomController wait_probability: expected a number in [0, 1], got {wait_probability!r}"
            )
        self.blueprints = list(blueprints)
        self.limits = limits
        self.wait_probability = float(wait_probability)
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def _pick(self, options: Sequence[T]) -> T:
        """One uniformly drawn element (callers pass only non-empty legal lists)."""
        return options[int(self._rng.integers(len(options)))]

    def decide(self, signals: EpochSignals, model: object) -> Decision:
        check_decide_args(signals, model)
        assert isinstance(model, MorphogeneticModel)
        # The WAIT coin is drawn every epoch, so WAIT's share does not depend on what is legal.
        wait = float(self._rng.random()) < self.wait_probability
        ops = [op for op in legal_ops(model, self.blueprints, self.limits) if op != Op.WAIT]
        if wait or not ops:
            return Decision(Op.WAIT, reason="random: wait" if ops else "random: no legal action")
        op: Op = self._pick(ops)
        slot: str = self._pick(legal_slots(model, op, self.blueprints, self.limits))
        reason = f"random: {op.name} on {slot}"
        if op == Op.GERMINATE:
            blueprint = self._pick(legal_blueprints(model, slot, self.blueprints, self.limits))
            _, algorithm = BLEND_STYLE_ALPHA[self._pick(_STYLES)]
            return Decision(
                op,
                slot=slot,
                blueprint=blueprint,
                alpha_algorithm=algorithm,
                blend_steps=self._pick(TEMPO_EPOCHS),
                alpha_target=self._pick(ALPHA_TARGETS),
                reason=f"{reason} ({blueprint})",
            )
        if op == Op.SET_ALPHA_TARGET:
            target = self._pick(legal_alpha_targets(model.slot(slot)))
            curve, steepness = self._curve()
            return Decision(
                op,
                slot=slot,
                alpha_target=target,
                alpha_steps=self._pick(ALPHA_SPEEDS),
                alpha_curve=curve,
                steepness=steepness,
                reason=f"{reason} (target {target})",
            )
        if op == Op.PRUNE:
            steps = self._pick(ALPHA_SPEEDS)
            curve, steepness = self._curve()
            return Decision(
                op, slot=slot, alpha_steps=steps, alpha_curve=curve, steepness=steepness, reason=reason
            )
        return Decision(op, slot=slot, reason=reason)  # ADVANCE, FOSSILIZE: only the slot matters

    def _curve(self) -> tuple[AlphaCurve, float]:
        curve, steepness = self._pick(ALPHA_CURVE_CHOICES)
        # The table stores 0.0 for curves without a steepness; the ramp needs a positive one.
        return curve, (steepness if curve == AlphaCurve.SIGMOID else DEFAULT_STEEPNESS)

    def state_dict(self) -> dict[str, object]:
        """The PCG64 generator state as plain ints and strings."""
        state = self._rng.bit_generator.state
        return {
            "bit_generator": {
                "bit_generator": str(state["bit_generator"]),
                "state": {"state": int(state["state"]["state"]), "inc": int(state["state"]["inc"])},
                "has_uint32": int(state["has_uint32"]),
                "uinteger": int(state["uinteger"]),
            }
        }

    def load_state_dict(self, state: object) -> None:
        """Strict: exactly what `state_dict` writes (CheckpointError naming the path); nothing changes on error."""
        generator = validate(RandomState, state, CONTROLLER_WHERE).bit_generator
        restored = np.random.PCG64()
        restored.state = {
            "bit_generator": generator.bit_generator,
            "state": {"state": generator.state.state, "inc": generator.state.inc},
            "has_uint32": generator.has_uint32,
            "uinteger": generator.uinteger,
        }
        self._rng = np.random.Generator(restored)
