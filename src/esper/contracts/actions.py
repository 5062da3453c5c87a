"""The controller's factored action space: 8 heads, their choice tables and per-op credit.

Plain Python (no torch): the environment, the policy and the checkpoint code all
agree on these tables, so each lives here exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum

from esper.contracts.alpha import (
    ALPHA_RAMP_STEPS,
    ALPHA_TARGETS,
    SIGMOID_STEEPNESS,
    AlphaAlgorithm,
    AlphaCurve,
)


class Op(IntEnum):
    """What the controller does this epoch. Values are a stable contract (action indices)."""

    WAIT = 0
    GERMINATE = 1
    SET_ALPHA_TARGET = 2
    PRUNE = 3
    FOSSILIZE = 4
    ADVANCE = 5


class BlendStyle(IntEnum):
    """How a seed is blended in: one choice of the `style` head."""

    LINEAR_ADD = 0
    LINEAR_MULTIPLY = 1
    SIGMOID_ADD = 2
    GATED_GATE = 3


# style -> (alpha ramp curve, blend operator)
BLEND_STYLE_ALPHA: dict[BlendStyle, tuple[AlphaCurve, AlphaAlgorithm]] = {
    BlendStyle.LINEAR_ADD: (AlphaCurve.LINEAR, AlphaAlgorithm.ADD),
    BlendStyle.LINEAR_MULTIPLY: (AlphaCurve.LINEAR, AlphaAlgorithm.MULTIPLY),
    BlendStyle.SIGMOID_ADD: (AlphaCurve.SIGMOID, AlphaAlgorithm.ADD),
    BlendStyle.GATED_GATE: (AlphaCurve.LINEAR, AlphaAlgorithm.GATE),
}

# Choice tables: the head's index selects an entry (ALPHA_TARGETS comes from contracts.alpha).
TEMPO_EPOCHS: tuple[int, ...] = (3, 5, 8)
ALPHA_SPEEDS: tuple[int, ...] = ALPHA_RAMP_STEPS
# (curve, sigmoid steepness); steepness is 0.0 for curves that have none.
ALPHA_CURVE_CHOICES: tuple[tuple[AlphaCurve, float], ...] = (
    (AlphaCurve.LINEAR, 0.0),
    (AlphaCurve.COSINE, 0.0),
    *((AlphaCurve.SIGMOID, steepness) for steepness in SIGMOID_STEEPNESS),
)

# Head order is the column order of an action tensor and of `ActionSpace.nvec()`.
HEADS: tuple[str, ...] = (
    "op",
    "slot",
    "blueprint",
    "style",
    "tempo",
    "alpha_target",
    "alpha_speed",
    "alpha_curve",
)
HEAD_INDEX: dict[str, int] = {name: i for i, name in enumerate(HEADS)}

# Heads whose choice matters for each op; only these get credit (log-prob, entropy, gradient).
HEAD_CREDIT: dict[Op, frozenset[str]] = {
    Op.WAIT: frozenset({"op"}),
    Op.GERMINATE: frozenset({"op", "slot", "blueprint", "style", "tempo", "alpha_target"}),
    Op.SET_ALPHA_TARGET: frozenset({"op", "slot", "style", "alpha_target", "alpha_speed", "alpha_curve"}),
    Op.PRUNE: frozenset({"op", "slot", "alpha_speed", "alpha_curve"}),
    Op.FOSSILIZE: frozenset({"op", "slot"}),
    Op.ADVANCE: frozenset({"op", "slot"}),
}


def credit_mask(op: Op | int) -> tuple[bool, ...]:
    """Which heads are credited for `op`, in HEADS order."""
    credited = HEAD_CREDIT[_as_op(op)]
    return tuple(name in credited for name in HEADS)


def _as_op(op: Op | int) -> Op:
    if isinstance(op, bool) or not isinstance(op, int):
        raise ValueError(f"op: expected an Op or int, got {type(op).__name__}")
    try:
        return Op(op)
    except ValueError:
        raise ValueError(f"op: expected one of {[int(o) for o in Op]}, got {op}") from None


@dataclass(frozen=True)
class ActionSpace:
    """Sizes of the 8 heads for a model with `n_slots` slots and `n_blueprints` blueprints."""

    n_slots: int
    n_blueprints: int

    def __post_init__(self) -> None:
        for name in ("n_slots", "n_blueprints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ActionSpace.{name}: expected an int >= 1, got {value!r}")

    def head_sizes(self) -> dict[str, int]:
        return {
            "op": len(Op),
            "slot": self.n_slots,
            "blueprint": self.n_blueprints,
            "style": len(BlendStyle),
            "tempo": len(TEMPO_EPOCHS),
            "alpha_target": len(ALPHA_TARGETS),
            "alpha_speed": len(ALPHA_SPEEDS),
            "alpha_curve": len(ALPHA_CURVE_CHOICES),
        }

    def nvec(self) -> tuple[int, ...]:
        """Head sizes in HEADS order (the shape of a MultiDiscrete space)."""
        sizes = self.head_sizes()
        return tuple(sizes[name] for name in HEADS)

    def to_dict(self) -> dict[str, int]:
        return {"n_slots": self.n_slots, "n_blueprints": self.n_blueprints}


@dataclass(frozen=True)
class FactoredAction:
    """One decision: an index per head. Heads not credited for `op` are ignored by the environment."""

    op: int
    slot: int
    blueprint: int
    style: int
    tempo: int
    alpha_target: int
    alpha_speed: int
    alpha_curve: int

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"FactoredAction.{f.name}: expected an int >= 0, got {value!r}")
        _as_op(self.op)

    @classmethod
    def from_indices(cls, indices: tuple[int, ...] | list[int]) -> FactoredAction:
        """Build from one index per head in HEADS order (e.g. a row of an action tensor)."""
        if len(indices) != len(HEADS):
            raise ValueError(f"FactoredAction: expected {len(HEADS)} indices ({HEADS}), got {len(indices)}")
        return cls(*(int(i) for i in indices))

    def validate(self, space: ActionSpace) -> None:
        """Raise if any index is out of range for `space`."""
        sizes = space.head_sizes()
        for name in HEADS:
            value = getattr(self, name)
            if value >= sizes[name]:
                raise ValueError(f"FactoredAction.{name}: expected an index < {sizes[name]}, got {value}")

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in HEADS}

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in HEADS)

    @property
    def op_enum(self) -> Op:
        return Op(self.op)

    def credited_heads(self) -> frozenset[str]:
        return HEAD_CREDIT[self.op_enum]

    # Decoded choices, for the environment that executes the action.
    @property
    def blend_style(self) -> BlendStyle:
        return BlendStyle(self.style)

    @property
    def tempo_epochs(self) -> int:
        return TEMPO_EPOCHS[self.tempo]

    @property
    def alpha_target_value(self) -> float:
        return ALPHA_TARGETS[self.alpha_target]

    @property
    def alpha_speed_steps(self) -> int:
        return ALPHA_SPEEDS[self.alpha_speed]

    @property
    def alpha_curve_choice(self) -> tuple[AlphaCurve, float]:
        return ALPHA_CURVE_CHOICES[self.alpha_curve]
