"""`run_started` carries the run plan from event version 3 on; older lines still read."""

from __future__ import annotations

import json

import pytest

from esper.contracts.schema import TELEMETRY_EVENT_VERSION
from esper.telemetry.events import RunStarted, event_to_json, parse_event

FIELDS = {
    "type": "run_started", "epoch": -1, "time": "2026-01-01T00:00:00+00:00", "task": "mnist1d",
    "controller": "heuristic", "seed": 0, "config": {"host_lr": None}, "versions": {}, "slots": ["r0c0"],
    "host_params": 10,
}


def test_the_current_version_records_the_plan_and_round_trips() -> None:
    assert TELEMETRY_EVENT_VERSION == 3
    event = RunStarted(**{**FIELDS, "plan": {"optimizer": {"host_lr": 0.05}}})  # type: ignore[arg-type]
    again = parse_event(event_to_json(event))
    assert isinstance(again, RunStarted) and again.plan == {"optimizer": {"host_lr": 0.05}}


def test_a_current_run_started_without_a_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="plan: required from event version 3 on"):
        parse_event(json.dumps({**FIELDS, "version": 3}))


@pytest.mark.parametrize("version", [1, 2])
def test_older_lines_have_no_plan(version: int) -> None:
    event = parse_event(json.dumps({**FIELDS, "version": version}))
    assert isinstance(event, RunStarted) and event.plan is None
    with pytest.raises(ValueError, match=f"plan: not part of event version {version}"):
        parse_event(json.dumps({**FIELDS, "version": version, "plan": {}}))


def test_a_summary_carries_the_plan_when_the_events_have_one() -> None:
    from esper.telemetry.events import EpochMetrics
    from esper.training.summary import summarize

    metrics = EpochMetrics(
        epoch=1, train_loss=1.0, train_accuracy=0.5, val_loss=1.0, val_accuracy=0.5, host_params=10,
        seed_params=0, total_params=10, slots={},
    )
    current = parse_event(json.dumps({**FIELDS, "plan": {"epochs": 1}}))
    assert summarize([current, metrics])["plan"] == {"epochs": 1}
    older = parse_event(json.dumps({**FIELDS, "version": 2}))
    assert "plan" not in summarize([older, metrics])
