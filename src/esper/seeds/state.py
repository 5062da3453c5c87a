"""Persistent state of the seed in one slot: stage, history and metrics.

These are strict pydantic models: what a checkpoint stores is exactly
`model_dump()` (plain ints, floats, strings, lists), and reading validates
every key and type (no `.get(key, default)`: a default would hide a damaged file).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from esper.contracts.alpha import ALPHA_TARGETS, AlphaAlgorithm
from esper.contracts.config import int_enum
from esper.contracts.stages import SeedStage

StageField = Annotated[SeedStage, int_enum(SeedStage)]
AlgorithmField = Annotated[AlphaAlgorithm, int_enum(AlphaAlgorithm)]


def _non_negative_or_nan(value: float) -> float:
    # A gradient norm is >= 0, or NaN/inf when the gradients were (gate G5 checks for that).
    if value < 0.0:
        raise ValueError(f"expected a value >= 0 (or NaN), got {value!r}")
    return value


def _allowed_target(value: float) -> float:
    if value not in ALPHA_TARGETS:
        raise ValueError(f"expected one of {', '.join(map(str, ALPHA_TARGETS))}, got {value!r}")
    return value


Count = Annotated[int, Field(ge=0)]
# Validation accuracy as a fraction.
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
# Accuracy points (differences of percentages).
Points = Annotated[float, Field(allow_inf_nan=False, ge=-100.0, le=100.0)]
GradientNorm = Annotated[float, AfterValidator(_non_negative_or_nan)]
AlphaTarget = Annotated[float, AfterValidator(_allowed_target)]


class _Persisted(BaseModel):
    # Mutable (the slot updates it every epoch); validated when built or loaded.
    model_config = ConfigDict(extra="forbid", strict=True)


class SeedMetrics(_Persisted):
    """What has been measured about a seed. None means "never measured"."""

    epochs_total: Count = 0
    epochs_in_stage: Count = 0
    # Validation accuracy (fraction) of the whole model when the seed entered its stage.
    accuracy_at_stage_start: Fraction | None = None
    accuracy_at_germination: Fraction | None = None
    current_accuracy: Fraction | None = None
    # Accuracy points lost when this seed's alpha is forced to 0 (measured, never guessed).
    counterfactual_contribution: Points | None = None
    contribution_velocity: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    # TRAINING only: accuracy points the seed would add if blended in at alpha 1
    # (its output never reaches the model's in TRAINING, so this is what G2 judges).
    projected_contribution: Points | None = None
    # Seed gradient norm / host gradient norm after backward.
    gradient_ratio: GradientNorm | None = None
    seed_gradient_norm: GradientNorm | None = None

    def improvement_points(self) -> float | None:
        """Accuracy gained since the stage started, in percentage points."""
        if self.accuracy_at_stage_start is None or self.current_accuracy is None:
            return None
        return 100.0 * (self.current_accuracy - self.accuracy_at_stage_start)

    def total_improvement_points(self) -> float | None:
        if self.accuracy_at_germination is None or self.current_accuracy is None:
            return None
        return 100.0 * (self.current_accuracy - self.accuracy_at_germination)

    def record_contribution(self, contribution: float) -> None:
        """Velocity is an exponential average of the change (0.7 old + 0.3 new)."""
        if self.counterfactual_contribution is not None:
            delta = contribution - self.counterfactual_contribution
            self.contribution_velocity = 0.7 * self.contribution_velocity + 0.3 * delta
        self.counterfactual_contribution = contribution


class StageRecord(_Persisted):
    stage: StageField
    tick: Count  # the slot's step_epoch counter when the stage was entered
    reason: str


class SeedState(_Persisted):
    """The seed occupying a slot (absent when the slot is DORMANT)."""

    blueprint: str
    alpha_algorithm: AlgorithmField
    stage: StageField
    previous_stage: StageField
    history: list[StageRecord]
    metrics: SeedMetrics
    # Why the seed was pruned (None unless it was).
    prune_reason: str | None = None


class SeedRecord(SeedState):
    """A seed as a checkpoint stores it: its state plus its blend plan.

    In memory the plan belongs to the slot's `SeedAlpha` (the one holder of
    alpha); the persisted layout keeps it inside the seed's record, where
    checkpoints have always had it.
    """

    # Epochs the alpha ramp takes when blending starts (the "tempo").
    blend_steps: Count
    # Alpha the blend ramps to when BLENDING starts (0.5, 0.7 or 1.0).
    alpha_target: AlphaTarget

    def seed_state(self) -> SeedState:
        return SeedState(**{name: getattr(self, name) for name in SeedState.model_fields})


def record_primitives(state: SeedState, blend_steps: int, alpha_target: float) -> dict[str, Any]:
    """What `SeedRecord` reads back: the state's primitives with the plan before the history,
    the key order checkpoints have always had."""
    data = state.model_dump()
    ordered: dict[str, Any] = {}
    for key, value in data.items():
        if key == "history":
            ordered["blend_steps"], ordered["alpha_target"] = blend_steps, alpha_target
        ordered[key] = value
    return ordered
