"""Check every input of a training run before anything on disk changes.

`validate_run_inputs` is called by `esper train` before it prints anything
and again by `run_training` itself, so both the command and the library
refuse a bad run while the output directory is still untouched. It resolves
the run's plan (`esper.training.plan`: the task, blueprint names, heuristic
settings and host overrides are checked there) and checks the controller (and
the agent file a `policy:PATH` controller names), device, telemetry backends,
the output directory, and for a resume the checkpoint and every setting that
would contradict the saved run. A resumed run uses the plan it started with
(recorded in its run_started event), so a default changed by a later esper
version never changes a run in progress.
Each problem is a `RunInputError` whose message is one line naming the input.

`prepare_run_dir` is the only function here that changes the disk: it creates
the output directory and, for `--overwrite`, removes the old run's own files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError

from esper.contracts.validation import describe_validation_error
from esper.training.config import TrainConfig
from esper.training.plan import PlanError, RunPlan, resolve_plan
from esper.training.run_files import CHECKPOINT_NAME, EVENTS_NAME, RUN_FILE_NAMES

__all__ = [
    "RESUMABLE_CHANGES",
    "ResolvedInputs",
    "RunInputError",
    "cuda_unavailable_reason",
    "prepare_run_dir",
    "validate_run_inputs",
]

# The only setting a resumed run may change: its total length (extending a run).
RESUMABLE_CHANGES = frozenset({"epochs"})

class RunInputError(ValueError):
    """An input of a training run cannot be used; the message is one line naming it."""


@dataclass(frozen=True)
class ResolvedInputs:
    """What a validated run will use.

    `config` is the run's config: for a resume, the saved one (with the new
    total of epochs when the run is extended); `plan` is what the run will use:
    that config resolved with its task's defaults, or for a resume the plan the
    run started with. `replaces` lists the old run's files that
    `prepare_run_dir` removes (only with `overwrite`).
    `nothing_to_do` is True when a resumed run already trained every epoch asked for.
    """

    config: TrainConfig
    plan: RunPlan
    out_dir: Path
    resume: Path | None
    replaces: tuple[Path, ...]
    trained_epochs: int
    total_epochs: int
    nothing_to_do: bool


def cuda_unavailable_reason() -> str | None:
    """Why `--device cuda` cannot run here, or None when it can."""
    if torch.cuda.is_available():
        return None
    version = torch.__version__.split("+")[0]
    if torch.version.cuda is None:
        return f"CUDA is not available to this torch build (torch {version}, CPU-only)"
    return f"CUDA is not available on this machine (torch {version} built for CUDA {torch.version.cuda}, no GPU found)"


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _label(key: str, labels: Mapping[str, str] | None) -> str:
    """Where a setting came from: "--seed" for a flag, "run.toml: governor.max_rollbacks" for a file."""
    origin = labels.get(key.split(".", 1)[0]) if labels is not None else None
    if origin is None:
        return key
    return origin if origin.startswith("--") else f"{origin}: {key}"


# --------------------------------------------------------------------------- the config's inputs
def _resolve(config: TrainConfig) -> RunPlan:
    try:
        return resolve_plan(config)
    except PlanError as error:
        raise RunInputError(str(error)) from None


def _check_controller(plan: RunPlan) -> None:
    from esper.control.registry import CONTROLLER_NAMES, POLICY_PREFIX, check_policy_agent

    spec = plan.controller
    if spec in CONTROLLER_NAMES:
        return
    if not spec.startswith(POLICY_PREFIX):
        valid = ", ".join([*CONTROLLER_NAMES, f"{POLICY_PREFIX}PATH"])
        raise RunInputError(f"--controller: unknown {spec!r}; valid: {valid}")
    path = Path(spec[len(POLICY_PREFIX) :])
    if not str(path) or str(path) == ".":
        raise RunInputError(f"--controller {spec!r}: expected a path after {POLICY_PREFIX!r}")
    if not path.exists():
        raise RunInputError(f"--controller {spec}: {path}: no such file")
    if not path.is_file():
        raise RunInputError(f"--controller {spec}: {path}: is a directory, expected an agent checkpoint (agent.pt)")
    try:
        check_policy_agent(str(path), blueprints=list(plan.blueprints))
    except ValueError as error:
        raise RunInputError(f"--controller {spec}: {error}") from None


def _check_device(config: TrainConfig) -> None:
    if config.device == "cuda":
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise RunInputError(f"--device cuda: {reason}")


def _check_telemetry(config: TrainConfig) -> None:
    from esper.telemetry.backends.tensorboard import TENSORBOARD_MISSING
    from esper.telemetry.backends.wandb import WANDB_MISSING

    needs = {"tensorboard": ("tensorboard", TENSORBOARD_MISSING), "wandb": ("wandb", WANDB_MISSING)}
    for name in config.telemetry:
        if name in needs:
            module, message = needs[name]
            if importlib.util.find_spec(module) is None:
                raise RunInputError(f"telemetry: {message}")


def _check_data_paths(config: TrainConfig) -> None:
    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        cause = "is not a directory" if Path(config.data_dir).exists() else "no such directory"
        raise RunInputError(f"--data-dir {config.data_dir}: {cause}")
    if config.text_file is not None and not Path(config.text_file).is_file():
        cause = "is not a file" if Path(config.text_file).exists() else "no such file"
        raise RunInputError(f"--text-file {config.text_file}: {cause}")


def _check_config(config: TrainConfig) -> RunPlan:
    """The run's plan, once every input it names is known to be usable."""
    plan = _resolve(config)
    _check_controller(plan)
    _check_device(config)
    _check_telemetry(config)
    _check_data_paths(config)
    return plan


# --------------------------------------------------------------------------- the output directory
def _probe_writable(directory: Path, what: str) -> None:
    """Create and remove a temporary file: the one test that also holds for root and read-only mounts."""
    try:
        fd, name = tempfile.mkstemp(prefix=".esper-probe-", dir=directory)
    except OSError as error:
        raise RunInputError(f"{what}: cannot write in {directory}: {error.strerror}") from None
    os.close(fd)
    os.unlink(name)


def _check_fresh_out_dir(out_dir: Path, overwrite: bool) -> tuple[Path, ...]:
    if out_dir.exists() and not out_dir.is_dir():
        raise RunInputError(f"--out {out_dir}: is a file, expected a directory")
    if not out_dir.exists():
        ancestor = out_dir.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise RunInputError(f"--out {out_dir}: {ancestor} is a file, not a directory")
        _probe_writable(ancestor, f"--out {out_dir}")
        return ()
    _probe_writable(out_dir, f"--out {out_dir}")
    present = tuple(out_dir / name for name in RUN_FILE_NAMES if (out_dir / name).exists())
    for path in present:
        if path.is_dir():
            raise RunInputError(f"--out {out_dir}: {path} is a directory, not a run file; move it away first")
    if present and not overwrite:
        raise RunInputError(
            f"--out {out_dir} already holds a run ({', '.join(p.name for p in present)}): "
            f"continue it with  esper train --resume {out_dir / CHECKPOINT_NAME}  (add --epochs N to extend it), "
            "or replace it with --overwrite"
        )
    return present if overwrite else ()


# --------------------------------------------------------------------------- resume
def _explicit_differences(
    requested: BaseModel, saved: BaseModel, prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    """(key, requested value, saved value) for each explicitly set field that differs."""
    found: list[tuple[str, Any, Any]] = []
    for name in sorted(requested.model_fields_set):
        key = f"{prefix}{name}"
        mine, theirs = getattr(requested, name), getattr(saved, name)
        if isinstance(mine, BaseModel) and isinstance(theirs, BaseModel):
            found.extend(_explicit_differences(mine, theirs, f"{key}."))
            continue
        if key in RESUMABLE_CHANGES:
            continue
        dumped_mine = requested.model_dump(mode="json", include={name})[name]
        dumped_theirs = saved.model_dump(mode="json", include={name})[name]
        if dumped_mine != dumped_theirs:
            found.append((key, dumped_mine, dumped_theirs))
    return found


def _check_resume_path(resume: Path) -> None:
    if not resume.exists():
        raise RunInputError(f"--resume {resume}: no such file")
    if resume.is_dir():
        raise RunInputError(
            f"--resume {resume}: is a directory; resume from its checkpoint, {resume / CHECKPOINT_NAME}"
        )
    if resume.name != CHECKPOINT_NAME:
        raise RunInputError(
            f"--resume {resume}: a run resumes from its own {CHECKPOINT_NAME} (the file the run keeps "
            f"next to its events.jsonl); to branch from a copy, copy the whole run directory and resume "
            f"the copy's {CHECKPOINT_NAME}"
        )


def _check_resume_dir(resume: Path, out_dir: Path) -> Path:
    run_dir = resume.parent
    if not out_dir.exists() or not os.path.samefile(out_dir, run_dir):
        # `cp -r A B` copies into B/A when B exists, so name a new directory in that case.
        branch = out_dir if not out_dir.exists() else Path("NEW_DIR")
        raise RunInputError(
            f"--out {out_dir}: a resumed run continues in its own directory ({run_dir}), next to its "
            f"history; drop --out, or to branch the run copy it first (cp -r {run_dir} {branch}) and "
            f"resume {branch / CHECKPOINT_NAME}"
        )
    if not (run_dir / EVENTS_NAME).is_file():
        raise RunInputError(
            f"--resume {resume}: {run_dir} holds no {EVENTS_NAME}, the run's history; a run resumes only "
            "in the directory it was trained in"
        )
    _probe_writable(run_dir, f"--resume {resume}")
    events = run_dir / EVENTS_NAME
    try:
        # Opening for append writes nothing and leaves the file's times alone.
        with open(events, "ab"):
            pass
    except OSError as error:
        raise RunInputError(f"--resume {resume}: cannot append to {events}: {error.strerror}") from None
    return run_dir


def _resolve_resume(
    config: TrainConfig, resume: Path, labels: Mapping[str, str] | None
) -> tuple[TrainConfig, int, int, int]:
    """The saved run's config (extended by --epochs), the epochs it trained, its new and its saved total."""
    from esper.training.run_io import load_run

    saved_run = load_run(resume)
    try:
        saved = TrainConfig.model_validate(saved_run.config)
    except ValidationError as error:
        raise RunInputError(
            f"--resume {resume}: config: {describe_validation_error(TrainConfig, error)}"
        ) from None
    trained = saved_run.run_state["epoch"]
    if type(trained) is not int or trained < 0:
        raise RunInputError(f"--resume {resume}: run > epoch: expected an int >= 0, got {trained!r}")
    differences = _explicit_differences(config, saved)
    if differences:
        details = "; ".join(
            f"{_label(key, labels)} {_shown(mine)} contradicts the saved run's {key} {_shown(theirs)}"
            for key, mine, theirs in differences
        )
        raise RunInputError(
            f"cannot resume {resume}: {details} (a resumed run keeps its settings; only --epochs may change, "
            "to extend it)"
        )
    # The run's default length is the one it started with, even if the task's default changed since.
    recorded = _recorded_plan(resume)
    recorded_epochs = recorded.get("epochs") if recorded is not None else None
    task_epochs = recorded_epochs if type(recorded_epochs) is int and recorded_epochs >= 1 else _resolve(saved).epochs
    saved_total = saved.epochs or task_epochs
    total = saved_total
    if "epochs" in config.model_fields_set:
        total = config.epochs or task_epochs
        if total < trained:
            raise RunInputError(
                f"{_label('epochs', labels)} {total}: the run has already trained {trained} epochs; epochs is "
                f"the run's total, so it can only extend the run (at least {trained})"
            )
    resolved = saved if total == saved_total else saved.model_copy(update={"epochs": total})
    return resolved, trained, total, saved_total


def _recorded_plan(resume: Path) -> dict[str, Any] | None:
    """The plan record of the run's run_started event; None for a run recorded before plans were."""
    from esper.telemetry.events import RunStarted, parse_event

    with open(resume.parent / EVENTS_NAME, "rb") as handle:
        first = handle.readline()
    try:
        started = parse_event(first.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        # Every checkpoint commits the run_started line: a damaged one is refused, naming the file,
        # by the check of events.jsonl against the checkpoint's commit record, before anything changes.
        return None
    if not isinstance(started, RunStarted) or started.plan is None:
        return None
    return dict(started.plan)


def _over(recorded: Any, current: Any) -> Any:
    """`recorded` with what it lacks taken from `current` (tables merged key by key)."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        return {**current, **{key: _over(value, current.get(key)) for key, value in recorded.items()}}
    return recorded


def _resumed_plan(plan: RunPlan, resume: Path, total: int) -> RunPlan:
    """The plan the run started with (its run_started event), with the resumed run's `total` of epochs.

    The saved config resolves to it unless a default (a task's, or a global one) changed since
    the run started (another esper version): the run continues with the values it started
    with, never with the new defaults. A setting that did not exist when the run started takes
    its value from the current resolution.
    """
    recorded = _recorded_plan(resume)
    if recorded is None:
        return plan
    current = plan.as_record()
    recorded["epochs"] = total  # the total may change (an extended run)
    # The output size is filled in once the data loads (and checked against it then).
    host = recorded.get("host")
    host_config = host.get("config") if isinstance(host, dict) else None
    if isinstance(host, dict) and isinstance(host_config, dict) and plan.host.output_key not in plan.host.config:
        recorded["host"] = {**host, "config": {k: v for k, v in host_config.items() if k != plan.host.output_key}}
    try:
        return RunPlan.model_validate_json(json.dumps(_over(recorded, current)))
    except ValidationError as error:
        raise RunInputError(
            f"--resume {resume}: the plan recorded in {EVENTS_NAME}: {describe_validation_error(RunPlan, error)}"
        ) from None


def validate_run_inputs(
    config: TrainConfig,
    out_dir: Path,
    *,
    resume: Path | None = None,
    overwrite: bool = False,
    labels: Mapping[str, str] | None = None,
) -> ResolvedInputs:
    """Check every input of a run without changing anything on disk; raise RunInputError naming the first bad one.

    A fresh run (`resume` None) may go into a missing or empty directory, or a
    directory without a run; a directory that holds a run is refused unless
    `overwrite`. A resumed run continues in the checkpoint's own directory
    (`out_dir` must be it), and every setting explicitly set in `config`
    (its `model_fields_set`, nested tables included) must equal the saved
    run's, except `epochs`, which may extend the run. `labels` maps a
    top-level key to where its value came from, a flag ("--seed") or a
    config file's path, for the messages.
    """
    out_dir = Path(out_dir)
    if resume is None:
        plan = _check_config(config)
        replaces = _check_fresh_out_dir(out_dir, overwrite)
        return ResolvedInputs(config, plan, out_dir, None, replaces, 0, plan.epochs, False)
    resume = Path(resume)
    if overwrite:
        raise RunInputError("--overwrite: a resumed run continues its own files; --overwrite is for a fresh run")
    _check_resume_path(resume)
    _check_resume_dir(resume, out_dir)
    resolved, trained, total, saved_total = _resolve_resume(config, resume, labels)
    plan = _resumed_plan(_resolve(resolved), resume, total)
    _check_controller(plan)
    _check_device(resolved)
    _check_telemetry(resolved)
    _check_data_paths(resolved)
    # Nothing to do only when the run had ended and is not extended; a run stopped early whose
    # total is lowered to the epochs it trained still runs its ending (test numbers, run_finished).
    done = trained >= total and trained >= saved_total
    return ResolvedInputs(resolved, plan, resume.parent, resume, (), trained, total, done)


def prepare_run_dir(inputs: ResolvedInputs) -> None:
    """Create the run directory; with --overwrite remove the old run's own files (nothing else)."""
    inputs.out_dir.mkdir(parents=True, exist_ok=True)
    for path in inputs.replaces:
        path.unlink(missing_ok=True)
