"""What a controller decides each epoch, and what it is shown to decide it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from esper.contracts.actions import Op
from esper.contracts.alpha import AlphaAlgorithm, AlphaCurve


@dataclass(frozen=True)
class Decision:
    """One lifecycle action. Fields that don't apply to `op` keep their defaults."""

    op: Op
    slot: str | None = None
    blueprint: str | None = None
    alpha_algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD
    blend_steps: int = 5  # tempo: epochs the blend ramp takes after TRAINING
    alpha_target: float = 1.0
    alpha_steps: int = 0  # speed of a retarget or scheduled prune (0 = at once)
    alpha_curve: AlphaCurve = AlphaCurve.LINEAR
    steepness: float = 12.0
    reason: str = ""

    def params(self) -> dict[str, float | int | str]:
        """The knobs that matter for this op, for telemetry."""
        if self.op == Op.GERMINATE:
            return {
                "alpha_algorithm": self.alpha_algorithm.name,
                "blend_steps": self.blend_steps,
                "alpha_target": self.alpha_target,
            }
        if self.op == Op.SET_ALPHA_TARGET:
            return {
                "alpha_target": self.alpha_target,
                "alpha_steps": self.alpha_steps,
                "alpha_curve": self.alpha_curve.name,
                "steepness": self.steepness,
            }
        if self.op == Op.PRUNE:
            return {"alpha_steps": self.alpha_steps, "alpha_curve": self.alpha_curve.name}
        return {}


WAIT = Decision(Op.WAIT)


@dataclass(frozen=True)
class EpochSignals:
    """Training signals after one epoch (accuracies are fractions)."""

    epoch: int  # epochs completed so far (1-based after the first epoch)
    max_epochs: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    host_params: int
    seed_params: int
    # Full histories, oldest first, including this epoch.
    val_loss_history: tuple[float, ...] = field(default_factory=tuple)
    val_accuracy_history: tuple[float, ...] = field(default_factory=tuple)
    train_loss_history: tuple[float, ...] = field(default_factory=tuple)

    @classmethod
    def from_history(
        cls, *, epoch: int, max_epochs: int, history: dict[str, list[float]], host_params: int, seed_params: int
    ) -> EpochSignals:
        """The signals of a run's latest epoch from its per-epoch history (keys train_loss,
        train_accuracy, val_loss, val_accuracy), as every driver of a run keeps it."""
        return cls(
            epoch=epoch,
            max_epochs=max_epochs,
            train_loss=history["train_loss"][-1],
            train_accuracy=history["train_accuracy"][-1],
            val_loss=history["val_loss"][-1],
            val_accuracy=history["val_accuracy"][-1],
            host_params=host_params,
            seed_params=seed_params,
            val_loss_history=tuple(history["val_loss"]),
            val_accuracy_history=tuple(history["val_accuracy"]),
            train_loss_history=tuple(history["train_loss"]),
        )


@runtime_checkable
class Controller(Protocol):
    """Decides one lifecycle action per epoch.

    `decide` receives the signals and the model (read it, never mutate it: the
    training loop executes the decision). `state_dict` holds primitives only
    so a run checkpoint can resume the controller exactly.
    """

    name: str

    def decide(self, signals: EpochSignals, model: object) -> Decision: ...

    def state_dict(self) -> dict[str, object]: ...

    def load_state_dict(self, state: dict[str, object]) -> None: ...


@runtime_checkable
class TelemetryObserver(Protocol):
    """A controller that also reads the run's telemetry (the learned policy reads the seeds'
    interactions from ContributionMeasured events); whoever runs it passes every event to `observe`."""

    def observe(self, event: object) -> None: ...
