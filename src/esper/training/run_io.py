"""Run checkpoints: model + optimizers + controller + governor + RNG + counters.

Loading returns the pieces; `esper.training.trainer` wires them back into a
GrowthRun so training resumes bit-for-bit on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from esper.blueprints import default_registry
from esper.checkpoints.controller_state import check_controller_state
from esper.checkpoints.errors import CheckpointError
from esper.checkpoints.io import load_checkpoint, save_checkpoint, split_header
from esper.checkpoints.model_io import model_from_payload, model_payload
from esper.checkpoints.run_state import check_run_state
from esper.checkpoints.slot_state import all_required
from esper.checkpoints.strict import require_keys, validate
from esper.contracts.committed_events import CommittedEvents
from esper.contracts.schema import RUN_CHECKPOINT_FORMAT, RUN_CHECKPOINT_VERSION
from esper.contracts.validation import type_name, validation_problems
from esper.control.heuristic import HeuristicConfig
from esper.control.registry import CONTROLLER_NAMES, POLICY_PREFIX
from esper.model import MorphogeneticModel
from esper.tasks import default_tasks
from esper.training.config import TrainConfig

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
    """Read a run checkpoint and validate all of it; any problem raises one CheckpointError naming its path.

    The config is checked as a TrainConfig (plus a known task and
    controller), the run state against its schema and the config, the
    controller state against its kind's schema, and the model as
    `load_model` does. What needs the built run (the optimizers the state
    loads into) is checked again by `GrowthRun.load_state_dict`, also before
    anything changes.
    """
    payload = load_checkpoint(path, format=RUN_CHECKPOINT_FORMAT)
    try:
        body = require_keys(split_header(payload)[1], set(RUN_KEYS), "")
        config = _config(body["config"])
        wall_seconds = body["wall_seconds"]
        if type(wall_seconds) is not float or not (math.isfinite(wall_seconds) and wall_seconds >= 0.0):
            raise CheckpointError.at(
                "wall_seconds", f"expected a finite float >= 0, got {type_name(wall_seconds)} {wall_seconds!r:.40}"
            )
        task = default_tasks().get(config.task)
        governor = config.governor
        run_state = check_run_state(
            body["run"],
            epochs=config.epochs or task.defaults.epochs,
            max_rollbacks=governor.max_rollbacks,
            divergence_consecutive=governor.divergence_consecutive,
        )
        # Types, ranges and epochs here; the controller checks what needs it (its blueprints) on load.
        check_controller_state(config.controller, body["controller"], epoch=run_state.epoch)
        events = None if body["events"] is None else validate(CommittedEvents, body["events"], "events")
        # Just read from the file and ours alone: the model may keep the tensors without copying.
        model = model_from_payload(body["model"], where="model", share_tensors=True)
    except CheckpointError as error:
        raise error.with_file(path) from None
    return RunCheckpoint(
        config=body["config"],
        model=model,
        run_state=body["run"],
        controller=body["controller"],
        wall_seconds=wall_seconds,
        events=events,
    )


# torch.manual_seed takes a seed below 2**64; set_num_threads allocates per thread (OpenMP aborts
# the process past a few million), and no machine this runs on has more than this many cores.
_MAX_SEED = 2**64 - 1
_MAX_THREADS = 1024


def _config(data: object) -> TrainConfig:
    """The run's config as a TrainConfig that can rebuild the run; else a CheckpointError at `config > field`."""
    # Every key is stored (model_dump): a missing one is damage, never its default.
    config = validate(all_required(TrainConfig), data, "config")
    tasks = default_tasks()
    if config.task not in tasks.names():
        raise CheckpointError.at("config > task", f"unknown task {config.task!r}; known: {', '.join(tasks.names())}")
    problems = []
    spec = config.controller
    if spec not in CONTROLLER_NAMES and not (spec.startswith(POLICY_PREFIX) and len(spec) > len(POLICY_PREFIX)):
        valid = ", ".join([*CONTROLLER_NAMES, f"{POLICY_PREFIX}PATH"])
        problems.append(("config > controller", f"unknown controller {spec!r}; valid: {valid}"))
    if not 0 <= config.seed <= _MAX_SEED:
        problems.append(("config > seed", f"expected an int in [0, 2**64), got {config.seed}"))
    if config.threads > _MAX_THREADS:
        problems.append(("config > threads", f"expected an int <= {_MAX_THREADS}, got {config.threads}"))
    if config.blueprints is not None:
        known = default_registry().names(tasks.get(config.task).topology)
        if not config.blueprints or len(set(config.blueprints)) != len(config.blueprints):
            problems.append(
                ("config > blueprints", f"expected a non-empty list of unique names, got {config.blueprints}")
            )
        problems += [
            (f"config > blueprints > [{index}]", f"unknown blueprint {name!r}; known: {', '.join(known)}")
            for index, name in enumerate(config.blueprints)
            if name not in known
        ]
    try:
        HeuristicConfig.model_validate(config.heuristic)
    except ValidationError as error:
        problems += validation_problems(HeuristicConfig, error, "config > heuristic")
    if problems:
        raise CheckpointError.many(problems)
    return config
