"""Weights & Biases logging (the `wandb` extra); offline by default (no network at run time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esper.telemetry.backends.tensorboard import event_scalars
from esper.telemetry.events import RunFinished, RunStarted, TelemetryEvent

WANDB_MISSING = "W&B backend needs the 'wandb' extra: pip install 'esper[wandb]'"
WANDB_MODES = ("offline", "online", "disabled")


def _wandb_module() -> Any:
    try:
        import wandb
    except ImportError as error:
        raise RuntimeError(WANDB_MISSING) from error
    return wandb


class WandbBackend:
    """Logs the same scalars as TensorBoard, the run config at start and the summary at the end."""

    name = "wandb"

    def __init__(self, project: str, run_dir: Path | str, mode: str = "offline") -> None:
        if mode not in WANDB_MODES:
            raise ValueError(f"WandbBackend.mode: expected one of {WANDB_MODES}, got {mode!r}")
        if not isinstance(project, str) or not project:
            raise ValueError(f"WandbBackend.project: expected a non-empty str, got {project!r}")
        wandb = _wandb_module()
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=project, dir=str(self.run_dir), mode=mode, name=self.run_dir.name)
        self._closed = False

    def write(self, event: TelemetryEvent) -> None:
        if self._closed:
            raise RuntimeError(f"WandbBackend({self.run_dir}): write after close")
        if isinstance(event, RunStarted):
            self._run.config.update(
                {
                    "task": event.task,
                    "controller": event.controller,
                    "seed": event.seed,
                    "slots": event.slots,
                    "host_params": event.host_params,
                    "versions": event.versions,
                    "config": event.config,
                    "plan": event.plan,
                }
            )
            return
        if isinstance(event, RunFinished):
            self._run.summary.update({"finish_reason": event.reason, **event.summary})
            return
        point = event_scalars(event)
        if point is None:
            return
        # The step goes into the row (not `step=`): W&B drops rows whose step goes backwards,
        # which happens across episodes and after a rollback.
        self._run.log({**point.values, point.step_name: point.step})

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._run.finish()
