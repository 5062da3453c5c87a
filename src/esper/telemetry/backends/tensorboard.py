"""TensorBoard scalars (the `tensorboard` extra).

`event_scalars` is the tag scheme shared with the W&B backend, so both
dashboards show the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper.telemetry.events import EpochMetrics, ImitationUpdate, PpoUpdate, RewardComputed, TelemetryEvent

TENSORBOARD_MISSING = "TensorBoard backend needs the 'tensorboard' extra: pip install 'esper[tensorboard]'"


@dataclass(frozen=True)
class ScalarPoint:
    """Scalars of one event, all at one step on the axis `step_name`."""

    step_name: str  # "epoch" or "ppo_round"
    step: int
    values: dict[str, float]


def event_scalars(event: TelemetryEvent) -> ScalarPoint | None:
    """Scalars worth plotting from one event, or None for events that have none."""
    prefix = "" if event.env is None else f"env{event.env}/"
    values: dict[str, float] = {}
    if isinstance(event, EpochMetrics):
        values.update(
            {
                "loss/train": event.train_loss,
                "loss/val": event.val_loss,
                "accuracy/train": event.train_accuracy,
                "accuracy/val": event.val_accuracy,
                "params/host": float(event.host_params),
                "params/seed": float(event.seed_params),
                "params/total": float(event.total_params),
            }
        )
        if event.lr is not None:
            values["lr"] = event.lr
        for slot_id, snapshot in event.slots.items():
            values[f"slot/{slot_id}/alpha"] = snapshot.alpha
            if snapshot.contribution is not None:
                values[f"slot/{slot_id}/contribution"] = snapshot.contribution
        step_name, step = "epoch", event.epoch
    elif isinstance(event, RewardComputed):
        values["reward/total"] = event.total
        values.update({f"reward/{name}": value for name, value in event.components.items()})
        step_name, step = "epoch", event.epoch
    elif isinstance(event, PpoUpdate):
        values.update({f"ppo/{name}": value for name, value in event.metrics.items()})
        step_name, step = "ppo_round", event.round
    elif isinstance(event, ImitationUpdate):
        values.update({f"imitation/{name}": value for name, value in event.metrics.items()})
        step_name, step = "imitation_pass", event.pass_index
    else:
        return None
    return ScalarPoint(step_name, step, {prefix + tag: value for tag, value in values.items()})


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise RuntimeError(TENSORBOARD_MISSING) from error
    return SummaryWriter


class TensorBoardBackend:
    """Writes scalars for epoch metrics, reward components and PPO metrics."""

    name = "tensorboard"

    def __init__(self, logdir: Path | str) -> None:
        writer_class = _summary_writer_class()
        self.logdir = Path(logdir)
        self._writer = writer_class(log_dir=str(self.logdir))
        self._closed = False

    def write(self, event: TelemetryEvent) -> None:
        if self._closed:
            raise RuntimeError(f"TensorBoardBackend({self.logdir}): write after close")
        point = event_scalars(event)
        if point is None:
            return
        for tag, value in point.values.items():
            # NaN/Inf are written as is: a diverging loss should be visible, not hidden.
            self._writer.add_scalar(tag, value, global_step=point.step)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.flush()
        self._writer.close()
