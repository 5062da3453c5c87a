"""Alpha (blend strength) schedule of one slot: ramp shapes and the controller.

The controller is plain Python (no torch) so it can be stepped, checked and
serialised without a device; a slot's `esper.seeds.alpha.SeedAlpha` extends it
with the blend plan, the forced value and the tensor the forward pass uses.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import Field, model_validator

from esper.contracts.alpha import AlphaCurve, AlphaMode
from esper.contracts.config import StrictConfig, int_enum
from esper.contracts.validation import FieldError

DEFAULT_STEEPNESS = 12.0

# Below this half-steepness the normalised sigmoid equals the identity to
# within double precision (the error is O(k^2)); it also keeps tanh(k/4) from
# underflowing to 0 in the denominator.
_SIGMOID_LINEAR_LIMIT = 1e-8


class AlphaControllerError(ValueError):
    """An alpha controller operation was refused (bad argument or wrong mode)."""


def _check_steepness(steepness: float) -> float:
    if isinstance(steepness, bool) or not isinstance(steepness, int | float):
        raise AlphaControllerError(f"steepness must be a number, got {type(steepness).__name__}")
    if not (math.isfinite(steepness) and steepness > 0.0):
        raise AlphaControllerError(f"steepness must be finite and > 0, got {steepness!r}")
    return float(steepness)


def _normalised_sigmoid(progress: float, steepness: float) -> float:
    # With s(z) = (1 + tanh(z/2)) / 2 the normalised logistic
    #   (s(k(p-1/2)) - s(-k/2)) / (s(k/2) - s(-k/2))
    # simplifies to (tanh(k(2p-1)/4) + tanh(k/4)) / (2 tanh(k/4)); tanh never
    # overflows, unlike exp, so any finite steepness is safe.
    quarter = steepness / 4.0
    if quarter < _SIGMOID_LINEAR_LIMIT:
        return progress
    edge = math.tanh(quarter)
    return (math.tanh(quarter * (2.0 * progress - 1.0)) + edge) / (2.0 * edge)


def curve_value(curve: AlphaCurve, progress: float, steepness: float = DEFAULT_STEEPNESS) -> float:
    """Fraction of a ramp completed at `progress` in [0, 1], for the given curve.

    Exactly 0.0 at progress 0 and exactly 1.0 at progress 1 for every curve
    and steepness; monotone non-decreasing in between.
    """
    if not isinstance(curve, AlphaCurve):
        raise AlphaControllerError(f"curve must be an AlphaCurve, got {curve!r}")
    steepness = _check_steepness(steepness)
    if isinstance(progress, bool) or not isinstance(progress, int | float):
        raise AlphaControllerError(f"progress must be a number, got {type(progress).__name__}")
    if not 0.0 <= progress <= 1.0:
        raise AlphaControllerError(f"progress must be in [0, 1], got {progress!r}")
    if progress == 0.0:
        return 0.0
    if progress == 1.0:
        return 1.0
    p = float(progress)
    if curve is AlphaCurve.LINEAR:
        value = p
    elif curve is AlphaCurve.COSINE:
        value = (1.0 - math.cos(math.pi * p)) / 2.0
    else:
        value = _normalised_sigmoid(p, steepness)
    # No clamp needed: cos and tanh are bounded and monotone, so each branch stays in [0, 1].
    return value


Unit = Annotated[float, Field(ge=0.0, le=1.0)]
ModeField = Annotated[AlphaMode, int_enum(AlphaMode)]
CurveField = Annotated[AlphaCurve, int_enum(AlphaCurve)]


class AlphaControllerState(StrictConfig):
    """Validated persisted form of an AlphaController (see `AlphaController.to_dict`)."""

    alpha: Unit
    target: Unit
    start: Unit
    mode: ModeField
    curve: CurveField
    steepness: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    steps_total: Annotated[int, Field(ge=0)]
    steps_done: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _consistent(self) -> AlphaControllerState:
        if self.steps_done > self.steps_total:
            raise ValueError(
                f"steps_done ({self.steps_done}) must be <= steps_total ({self.steps_total})"
            )
        if self.mode is AlphaMode.HOLD:
            # Every way into HOLD (a finished ramp, a jump, a halt, a fresh controller) sets alpha to
            # the target and leaves no step pending.
            if self.alpha != self.target:
                raise FieldError("alpha", f"mode HOLD holds alpha at its target ({self.target}), got {self.alpha}")
            if self.steps_done != self.steps_total:
                raise ValueError(
                    f"mode HOLD has no step pending: steps_done ({self.steps_done}) must equal "
                    f"steps_total ({self.steps_total})"
                )
            return self
        # A ramp in progress: step() must still have a step to take, in the stated direction.
        if self.steps_done >= self.steps_total:
            raise ValueError(
                f"mode {self.mode.name} needs steps_done < steps_total, "
                f"got steps_done={self.steps_done}, steps_total={self.steps_total}"
            )
        rising = self.target > self.start
        if rising != (self.mode is AlphaMode.UP) or self.target == self.start:
            raise ValueError(
                f"mode {self.mode.name} does not match start={self.start} -> target={self.target}"
            )
        low, high = sorted((self.start, self.target))
        if not low <= self.alpha <= high:
            raise ValueError(f"alpha ({self.alpha}) must lie between start ({self.start}) and target")
        # Mid-ramp alpha is a function of the ramp (step() recomputes it every tick): any other value
        # could not have been reached.
        expected = _ramp_value(self.start, self.target, self.curve, self.steepness, self.steps_done, self.steps_total)
        if self.alpha != expected:
            raise FieldError(
                "alpha",
                f"expected {expected!r} (the {self.curve.name} ramp's value at step "
                f"{self.steps_done}/{self.steps_total}), got {self.alpha!r}",
            )
        return self


def _ramp_value(start: float, target: float, curve: AlphaCurve, steepness: float, done: int, total: int) -> float:
    """Alpha after `done` of `total` ticks of a ramp from `start` to `target` (done < total)."""
    if done == 0:
        return start
    fraction = curve_value(curve, done / total, steepness)
    value = start + (target - start) * fraction
    low, high = sorted((start, target))
    # Keep rounding from stepping outside the ramp's range.
    return min(high, max(low, value))


class AlphaController:
    """Moves alpha toward a target over a fixed number of ticks along a curve.

    One `step()` per epoch. A new target can only be set while holding, so a
    ramp always finishes (or is explicitly jumped) before the next one starts.
    """

    def __init__(self) -> None:
        self.alpha: float = 0.0
        self.target: float = 0.0
        self.start: float = 0.0
        self.mode: AlphaMode = AlphaMode.HOLD
        self.curve: AlphaCurve = AlphaCurve.LINEAR
        self.steepness: float = DEFAULT_STEEPNESS
        self.steps_total: int = 0
        self.steps_done: int = 0

    def __repr__(self) -> str:
        return (
            f"AlphaController(alpha={self.alpha}, target={self.target}, mode={self.mode.name}, "
            f"curve={self.curve.name}, step={self.steps_done}/{self.steps_total})"
        )

    @property
    def at_target(self) -> bool:
        return self.mode is AlphaMode.HOLD and self.alpha == self.target

    def retarget(
        self,
        target: float,
        steps: int,
        curve: AlphaCurve = AlphaCurve.LINEAR,
        steepness: float = DEFAULT_STEEPNESS,
    ) -> None:
        """Start a ramp from the current alpha to `target` over `steps` ticks (0 = jump now)."""
        if self.mode is not AlphaMode.HOLD:
            raise AlphaControllerError(
                f"retarget is only allowed in HOLD; controller is in {self.mode.name} "
                f"(step {self.steps_done}/{self.steps_total} toward {self.target})"
            )
        # Validate everything before touching state so a refusal leaves it intact.
        if isinstance(target, bool) or not isinstance(target, int | float):
            raise AlphaControllerError(f"target must be a number, got {type(target).__name__}")
        if not 0.0 <= target <= 1.0:
            raise AlphaControllerError(f"target must be in [0, 1], got {target!r}")
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise AlphaControllerError(f"steps must be an int, got {type(steps).__name__}")
        if steps < 0:
            raise AlphaControllerError(f"steps must be >= 0, got {steps}")
        if not isinstance(curve, AlphaCurve):
            raise AlphaControllerError(f"curve must be an AlphaCurve, got {curve!r}")
        steepness = _check_steepness(steepness)

        self.start = self.alpha
        self.target = float(target)
        self.curve = curve
        self.steepness = steepness
        self.steps_done = 0
        if steps == 0 or self.target == self.alpha:
            self.alpha = self.target
            self.steps_total = 0
            return
        self.steps_total = steps
        self.mode = AlphaMode.UP if self.target > self.alpha else AlphaMode.DOWN

    def halt(self) -> None:
        """Stop a ramp where it is: hold the current alpha (used before a scheduled prune)."""
        self.start = self.target = self.alpha
        self.mode = AlphaMode.HOLD
        self.steps_total = self.steps_done = 0

    def step(self) -> float:
        """Advance one tick; returns the new alpha (unchanged while holding)."""
        if self.mode is AlphaMode.HOLD:
            return self.alpha
        self.steps_done += 1
        if self.steps_done >= self.steps_total:
            # Land exactly on the target: gates compare alpha == 1.0.
            self.alpha = self.target
            self.mode = AlphaMode.HOLD
            return self.alpha
        self.alpha = _ramp_value(
            self.start, self.target, self.curve, self.steepness, self.steps_done, self.steps_total
        )
        return self.alpha

    def to_dict(self) -> dict[str, Any]:
        """Primitives only (enums as ints), loadable under torch.load(weights_only=True)."""
        return {
            "alpha": float(self.alpha),
            "target": float(self.target),
            "start": float(self.start),
            "mode": int(self.mode),
            "curve": int(self.curve),
            "steepness": float(self.steepness),
            "steps_total": int(self.steps_total),
            "steps_done": int(self.steps_done),
        }

    @classmethod
    def from_dict(cls, data: Any) -> AlphaController:
        """Rebuild from `to_dict()` output.

        Strict: a missing or unknown key, a wrong type, an unknown enum value,
        an out-of-range number or an inconsistent ramp raises
        pydantic.ValidationError (a ValueError) whose location names the field.
        """
        state = AlphaControllerState.model_validate(data)
        controller = cls()
        controller.alpha = float(state.alpha)
        controller.target = float(state.target)
        controller.start = float(state.start)
        controller.mode = AlphaMode(state.mode)
        controller.curve = AlphaCurve(state.curve)
        controller.steepness = float(state.steepness)
        controller.steps_total = state.steps_total
        controller.steps_done = state.steps_done
        return controller
