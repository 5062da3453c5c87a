"""`run_training`: the main job — grow a model on a task and write its outputs.

Outputs in the run directory: events.jsonl (telemetry), checkpoint.pt
(resumable, rewritten after every epoch so Ctrl-C loses at most the epoch in
progress) and summary.json (built from the events). report.png, the picture
of the same events, is drawn by the command that ran the training (`esper
train`), so this package needs no plotting or terminal code.

The checkpoint is the commit point of an epoch. Just before it is written,
events.jsonl is flushed and fsynced and the checkpoint records that prefix
(length, lines, SHA-256); a resumed run cuts events.jsonl back to it, so the
events of an epoch that was never checkpointed are dropped and replayed, never
duplicated. summary.json (and the command's report.png) are written
(atomically) when the run ends, and removed when it is resumed, so one that
exists always describes the events beside it.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import JsonValue

import esper
from esper import distributed
from esper.checkpoints.atomic import remove_stray_temps
from esper.checkpoints.errors import CheckpointError
from esper.contracts.committed_events import CommittedEvents
from esper.control.decision import TelemetryObserver
from esper.telemetry import events as ev
from esper.telemetry import strict_json
from esper.telemetry.backends import JsonlBackend, build_backends
from esper.telemetry.hub import Backend, TelemetryHub
from esper.telemetry.replay import read_events
from esper.training.config import TrainConfig
from esper.training.epoch_loop import GOVERNOR_ABORT, run_epochs
from esper.training.growth_run import GrowthRun
from esper.training.preflight import prepare_run_dir, validate_run_inputs
from esper.training.run_files import CHECKPOINT_NAME, EVENTS_NAME, REPORT_NAME, SUMMARY_NAME
from esper.training.run_io import load_run, save_run
from esper.training.summary import summarize, write_summary

__all__ = [
    "CHECKPOINT_NAME",
    "EVENTS_NAME",
    "GOVERNOR_ABORT",
    "REPORT_NAME",
    "SUMMARY_NAME",
    "complete_outputs",
    "run_training",
    "versions",
]


def versions() -> dict[str, str]:
    return {"esper": esper.__version__, "torch": torch.__version__, "python": platform.python_version()}


def run_training(
    config: TrainConfig,
    *,
    out_dir: Path,
    resume: Path | None = None,
    stop_after: int | None = None,
    extra_backends: list[Backend] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train (or resume) one run; returns its summary.

    Every input is checked first (`validate_run_inputs`, RunInputError) and
    nothing on disk changes until all pass. A fresh run refuses a directory
    that holds a run unless `overwrite`, which then removes that run's own
    files. A resume continues in the checkpoint's directory with the saved
    config; `config` may only extend `epochs`, any other field it sets must
    equal the saved value. `stop_after` ends the run after that many epochs in
    total, leaving a resumable checkpoint (what Ctrl-C does, but at a chosen epoch).
    """
    # Under torchrun, rank 0 alone reads and writes the run directory; the others get its verdicts.
    main = distributed.is_main()
    inputs = distributed.on_main(lambda: validate_run_inputs(config, out_dir, resume=resume, overwrite=overwrite))
    config = inputs.config
    if inputs.nothing_to_do:
        return distributed.on_main(lambda: _nothing_to_do(out_dir))
    if main:
        prepare_run_dir(inputs)
    names = list(dict.fromkeys(["jsonl", *config.telemetry]))
    backends = build_backends(names, out_dir) if main else []
    events_log = next((backend for backend in backends if isinstance(backend, JsonlBackend)), None)
    # Extra backends see every rank's events (the caller gives them to rank 0 alone, or to all).
    hub = TelemetryHub([*backends, *(extra_backends or [])])
    checkpoint_path = out_dir / CHECKPOINT_NAME
    listeners: list[Callable[[ev.TelemetryEvent], None]] = []

    def emit(event: ev.TelemetryEvent) -> None:
        hub.emit(event)
        for listener in listeners:
            listener(event)

    def attach(controller: Any) -> Any:
        # A controller that reads telemetry (the learned policy) sees every event of the run.
        if isinstance(controller, TelemetryObserver):
            listeners.append(controller.observe)
        return controller

    with hub:
        if resume is not None:
            saved = load_run(resume)  # every rank reads the checkpoint: it must be readable on every node
            if events_log is not None:
                _resume_outputs(saved.events, events_log, resume, out_dir)
            run = GrowthRun(inputs.plan, emit=emit, model=saved.model)
            run.load_state_dict(saved.run_state)
            controller = attach(run.make_controller())
            controller.load_state_dict(saved.controller)
            wall_before = saved.wall_seconds
        else:
            run = GrowthRun(inputs.plan, emit=emit)
            controller = attach(run.make_controller())
            run.started_event(controller.name, versions(), config)
            wall_before = 0.0
        started = time.perf_counter()

        def wall() -> float:
            return wall_before + time.perf_counter() - started

        def checkpoint() -> None:
            if events_log is None:  # a rank other than 0 writes nothing
                return
            save_run(
                checkpoint_path,
                config=config.model_dump(mode="json"),
                model=run.model,
                run_state=run.state_dict(),
                controller=controller.state_dict(),
                wall_seconds=wall(),
                events=_commit_events(events_log, hub),
            )

        if resume is None:
            # Epoch 0 is committed too: every run directory with events has a checkpoint that resumes it.
            checkpoint()
        outdated = [out_dir / SUMMARY_NAME, out_dir / REPORT_NAME] if resume is not None else []

        def commit_epoch() -> None:
            checkpoint()
            # The run has moved past what an earlier summary or report describes.
            while outdated and main:
                outdated.pop().unlink(missing_ok=True)
        end = run_epochs(run, controller, commit=commit_epoch, stop_after=stop_after)
        test_loss, test_accuracy = run.test()
        final: dict[str, JsonValue] = {"test_accuracy": test_accuracy, "test_loss": test_loss, "wall_seconds": wall()}
        reason = end.reason
        if end.completed or end.aborted:
            hub.emit(ev.RunFinished(epoch=run.epoch, summary=final, reason=reason))
            # Commit the run_finished line too: extending the run later keeps it (the history says
            # where the run ended before), and a failed extension leaves it in place.
            commit_epoch()
    return distributed.on_main(lambda: _write_outputs(out_dir, final, reason))


def _nothing_to_do(out_dir: Path) -> dict[str, Any]:
    complete_outputs(out_dir)
    return summarize(read_events(out_dir / EVENTS_NAME))


def _write_outputs(out_dir: Path, final: dict[str, Any], reason: str) -> dict[str, Any]:
    # Closing the hub flushed and fsynced events.jsonl: the summary is built from what is on disk.
    summary = summarize(read_events(out_dir / EVENTS_NAME))
    if "test_accuracy" not in summary:  # stopped early: report the current test numbers too
        summary.update(strict_json.json_safe(final))
        summary["finish_reason"] = reason
    write_summary(out_dir / SUMMARY_NAME, summary)
    return summary


def _commit_events(events_log: JsonlBackend, hub: TelemetryHub) -> CommittedEvents:
    """Make the events written so far durable and describe them, for the checkpoint about to be written."""
    if events_log not in hub.backends:
        # The hub disabled it after a failed write: the record is incomplete, so nothing more is committed.
        failures = [f.error for f in hub.failures if f.backend == events_log.name]
        raise OSError(f"{events_log.path}: events could not be written ({'; '.join(failures)})")
    return events_log.commit()


def complete_outputs(out_dir: Path) -> list[str]:
    """Write the summary that a finished run lacks; returns the names written.

    A finished run commits its last event with its checkpoint before writing its summary
    (and the command its report), so a process stopped while writing them leaves a run that
    is done but not reported: resuming it writes them from the events, which hold everything
    they show.
    """
    for name in (CHECKPOINT_NAME, SUMMARY_NAME, REPORT_NAME):
        remove_stray_temps(out_dir / name)  # the stopped process's unfinished writes
    events = read_events(out_dir / EVENTS_NAME)
    written: list[str] = []
    if not (out_dir / SUMMARY_NAME).is_file():
        write_summary(out_dir / SUMMARY_NAME, summarize(events))
        written.append(SUMMARY_NAME)
    return written


def _resume_outputs(
    committed: CommittedEvents | None, events_log: JsonlBackend, checkpoint: Path, out_dir: Path
) -> None:
    """Bring the run directory back to the moment `checkpoint` was written, before anything is appended."""
    if committed is None:
        raise CheckpointError.at(
            "events",
            "not recorded: this checkpoint comes from an older esper that did not record which events it "
            "commits, so it cannot be resumed exactly (its model can still be exported)",
            file=checkpoint,
        )
    events_log.verify(committed)  # refuse a history that is not this checkpoint's before changing anything
    # A summary or report on disk describes the committed state (a finished run commits its
    # run_finished line too), so they stay until the resumed run commits its next epoch: a resume
    # that fails before then (a full disk) leaves the earlier run whole.
    for name in (CHECKPOINT_NAME, SUMMARY_NAME, REPORT_NAME):
        remove_stray_temps(out_dir / name)
    # Events after the committed prefix belong to an epoch that was never checkpointed: this run replays it.
    events_log.rewind(committed)
