"""Run checkpoints: model + optimizers + controller + governor + RNG + counters.

Loading returns the pieces; `esper.training.trainer` wires them back into a
GrowthRun so training resumes bit-for-bit on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper.checkpoints.errors import CheckpointError
from esper.checkpoints.io import load_checkpoint, save_checkpoint
from esper.checkpoints.model_io import model_from_payload, model_payload
from esper.checkpoints.strict import validate
from esper.contracts.committed_events import CommittedEvents
from esper.contracts.schema import RUN_CHECKPOINT_FORMAT, RUN_CHECKPOINT_VERSION
from esper.model import MorphogeneticModel

RUN_KEYS = frozenset({"config", "model", "run", "controller", "wall_seconds", "events"})


@dataclass
class RunCheckpoint:
    config: dict[str, Any]
    model: MorphogeneticModel
    run_state: dict[str, Any]
    controller: dict[str, Any]
    wall_seconds: float
    # The prefix of events.jsonl this checkpoint commits; None in a checkpoint migrated from
    # version 1, which did not record it.
    events: CommittedEvents | None


def save_run(
    path: Path,
    *,
    config: dict[str, Any],
    model: MorphogeneticModel,
    run_state: dict[str, Any],
    controller: dict[str, Any],
    wall_seconds: float,
    events: CommittedEvents,
) -> None:
    payload = {
        "config": config,
        "model": model_payload(model),
        "run": run_state,
        "controller": controller,
        "wall_seconds": float(wall_seconds),
        "events": events.model_dump(),
    }
    save_checkpoint(payload, path, format=RUN_CHECKPOINT_FORMAT, schema_version=RUN_CHECKPOINT_VERSION)


def load_run(path: Path) -> RunCheckpoint:
    payload = load_checkpoint(path, format=RUN_CHECKPOINT_FORMAT)
    body = {k: v for k, v in payload.items() if k in RUN_KEYS}
    missing = RUN_KEYS - set(body)
    if missing:
        raise CheckpointError.many([(key, "missing required key") for key in sorted(missing)], file=path)
    for key in ("config", "run", "controller"):
        if not isinstance(body[key], dict):
            raise CheckpointError.at(key, f"expected dict, got {type(body[key]).__name__}", file=path)
    if not isinstance(body["wall_seconds"], float):
        raise CheckpointError(
            f"{path}: wall_seconds: expected float, got {type(body['wall_seconds']).__name__}"
        )
    try:
        events = None if body["events"] is None else validate(CommittedEvents, body["events"], "events")
    except CheckpointError as error:
        raise error.with_file(path) from None
    try:
        # Just read from the file and ours alone: the model may keep the tensors without copying.
        model = model_from_payload(body["model"], where="model", share_tensors=True)
    except CheckpointError as error:
        raise error.with_file(path) from None
    return RunCheckpoint(
        config=body["config"],
        model=model,
        run_state=body["run"],
        controller=body["controller"],
        wall_seconds=body["wall_seconds"],
        events=events,
    )
