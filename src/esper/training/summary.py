"""Build a run's summary from its telemetry events alone.

`summary.json` is written by this function from the events the run emitted,
so replaying `events.jsonl` reproduces it exactly — proof that the events are
a complete record of the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from esper.checkpoints.atomic import atomic_write_bytes
from esper.telemetry import events as ev
from esper.telemetry import strict_json


def _seed_outcome(last_stage: str) -> str:
    if last_stage == "FOSSILIZED":
        return "fossilized"
    if last_stage in ("PRUNED", "EMBARGOED", "RESETTING", "DORMANT"):
        return "pruned"
    return f"active ({last_stage})"


def summarize(events: Iterable[ev.TelemetryEvent]) -> dict[str, Any]:
    started: ev.RunStarted | None = None
    finished: ev.RunFinished | None = None
    last_metrics: ev.EpochMetrics | None = None
    seeds: list[dict[str, Any]] = []
    open_seed: dict[str, dict[str, Any]] = {}
    rollbacks = 0
    for event in events:
        if isinstance(event, ev.RunStarted):
            if started is None:
                started = event
        elif isinstance(event, ev.EpochMetrics):
            last_metrics = event
            # A run extended after it finished: its earlier end no longer describes it.
            finished = None
        elif isinstance(event, ev.SeedStageChanged):
            if event.from_stage == "DORMANT" and event.to_stage == "GERMINATED":
                record: dict[str, Any] = {
                    "slot": event.slot,
                    "blueprint": event.blueprint,
                    "germinated_epoch": event.epoch,
                    "stages": ["GERMINATED"],
                    "outcome": "",
                    "ended_epoch": None,
                    "params": event.seed_params,
                }
                seeds.append(record)
                open_seed[event.slot] = record
            elif event.slot in open_seed:
                record = open_seed[event.slot]
                record["stages"].append(event.to_stage)
                if event.to_stage in ("FOSSILIZED", "PRUNED"):
                    record["ended_epoch"] = event.epoch
                if event.to_stage == "PRUNED":
                    record["prune_reason"] = event.reason
                if event.to_stage in ("FOSSILIZED", "DORMANT"):
                    del open_seed[event.slot]
        elif isinstance(event, ev.GovernorAction) and event.action in ("rollback", "abort"):
            rollbacks += 1
        elif isinstance(event, ev.RunFinished):
            finished = event
    if started is None or last_metrics is None:
        raise ValueError(
            "events hold no complete epoch: a summary needs run_started and epoch_metrics events"
        )
    for record in seeds:
        record["outcome"] = _seed_outcome(record["stages"][-1])
    summary: dict[str, Any] = {
        "task": started.task,
        "controller": started.controller,
        "seed": started.seed,
        "epochs": last_metrics.epoch,
        "val_accuracy": last_metrics.val_accuracy,
        "val_loss": last_metrics.val_loss,
        "train_accuracy": last_metrics.train_accuracy,
        "host_params": last_metrics.host_params,
        "seed_params": last_metrics.seed_params,
        "total_params": last_metrics.total_params,
        "seeds": seeds,
        "rollbacks": rollbacks,
        "config": started.config,
        "versions": started.versions,
    }
    # What the run used (task defaults resolved); events written before plans were recorded have none.
    if started.plan is not None:
        summary["plan"] = started.plan
    if finished is not None:
        summary.update(finished.summary)
        summary["finish_reason"] = finished.reason
    return summary


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write summary.json atomically: a failed write (disk full) leaves the previous file whole."""
    atomic_write_bytes(path, (strict_json.dumps(summary, indent=2) + "\n").encode("utf-8"))
