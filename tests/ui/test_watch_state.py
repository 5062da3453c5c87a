"""esper watch without a terminal: the incremental follower and the run-state model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esper.telemetry import events as ev
from esper.telemetry.replay import read_events
from esper.ui.watch import cost
from esper.ui.watch.follower import EventFollower, FollowStatus, status_message
from esper.ui.watch.state import GateRecord, RunState, SlotView, StageChange

from .watch_helpers import TRAIN_EPOCHS, make_train_run


@pytest.fixture(scope="module")
def train_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("watch-train")
    return out, make_train_run(out)


def follow_all(follower: EventFollower, state: RunState | None = None) -> tuple[RunState, list[int]]:
    state = state or RunState()
    lines: list[int] = []
    while True:
        result = follower.poll()
        for line, event in result.events:
            state.apply(event, line)
            lines.append(line)
        state.add_problems(result.problems)
        if not result.more:
            return state, lines


def test_the_follower_reads_what_replay_reads(train_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, _ = train_run
    follower = EventFollower(run_dir, max_bytes_per_poll=700)  # many small polls, lines cut across them
    events: list[ev.TelemetryEvent] = []
    while True:
        result = follower.poll()
        assert result.status is FollowStatus.FOLLOWING and not result.problems
        events += [event for _, event in result.events]
        if not result.more:
            break
    assert events == read_events(run_dir / "events.jsonl")
    assert follower.offset == (run_dir / "events.jsonl").stat().st_size
    assert follower.poll().events == []  # nothing new: nothing read


def test_state_of_a_real_run(train_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, summary = train_run
    state, _ = follow_all(EventFollower(run_dir))
    assert (state.kind, state.task, state.controller) == ("train", "mnist1d", "heuristic")
    assert state.epoch == TRAIN_EPOCHS and len(state.epochs) == TRAIN_EPOCHS
    assert state.best_val_accuracy == max(point.val_accuracy for point in state.epochs)
    assert state.current is not None and state.current.total_params == summary["total_params"]
    assert state.test_accuracy == summary["test_accuracy"] and state.finished_reason == "completed"
    slot = state.slots["r0c0"]
    assert (slot.stage, slot.blueprint, slot.alpha) == ("FOSSILIZED", "conv_light", 1.0)
    assert [g.gate for g in slot.gates] == ["G1", "G2", "G3", "G5"] and all(g.passed for g in slot.gates)
    assert [c.to_stage for c in slot.changes] == ["GERMINATED", "TRAINING", "BLENDING", "HOLDING", "FOSSILIZED"]
    assert len(slot.contributions) == state.event_counts["contribution_measured"] > 0
    assert slot.end_reason is not None and slot.end_reason.startswith("FOSSILIZED at epoch")
    assert "gate G5 passed" in slot.end_reason
    assert len(slot.lane) == TRAIN_EPOCHS and slot.lane[0] == "DORMANT" and slot.lane[-1] == "FOSSILIZED"
    assert "GERMINATED" in slot.lane and "BLENDING" in slot.lane
    assert state.slot_order() == ["r0c0", "r0c1", "r0c2"] and state.slots["r0c1"].lane == ["DORMANT"] * TRAIN_EPOCHS
    assert state.elapsed_seconds is not None and state.elapsed_seconds > 0


def test_the_log_filters_by_type_and_slot(train_run: tuple[Path, dict[str, Any]]) -> None:
    state, _ = follow_all(EventFollower(train_run[0]))
    gates = state.filtered_log("gate_evaluated", None, 100)
    assert [e.text.split()[0] for e in gates] == ["G1", "G2", "G3", "G5"]
    slot_entries = state.filtered_log(None, "r0c0", 1000)
    assert slot_entries and all(e.slot == "r0c0" for e in slot_entries)
    assert {e.type for e in slot_entries} >= {"seed_stage_changed", "gate_evaluated", "contribution_measured"}
    newest = state.filtered_log(None, None, 3)
    assert [e.line for e in newest] == [e.line for e in list(state.log)[-3:]]
    assert "gate_evaluated" in state.event_types() and state.log_slots() == ["r0c0"]


def test_a_partial_last_line_waits_for_its_newline(tmp_path: Path, train_run: tuple[Path, dict[str, Any]]) -> None:
    lines = (train_run[0] / "events.jsonl").read_bytes().splitlines(keepends=True)
    path = tmp_path / "events.jsonl"
    path.write_bytes(lines[0] + lines[1][:50])
    follower = EventFollower(tmp_path)
    result = follower.poll()
    assert [n for n, _ in result.events] == [1] and not result.problems
    assert follower.pending_partial == 50
    with open(path, "ab") as handle:
        handle.write(lines[1][50:])
    result = follower.poll()
    assert [(n, e.type) for n, e in result.events] == [(2, "epoch_metrics")]
    assert follower.pending_partial == 0 and not result.problems


def test_a_malformed_line_is_reported_and_skipped(tmp_path: Path, train_run: tuple[Path, dict[str, Any]]) -> None:
    lines = (train_run[0] / "events.jsonl").read_bytes().splitlines(keepends=True)
    corrupt = [lines[0], b'{"type": "epoch_metrics", "epoch": 1, "train_lo\n', b"\xff\xfe\n", b"\n",
               b'{"type": "no_such_event", "epoch": 1}\n', lines[1]]
    (tmp_path / "events.jsonl").write_bytes(b"".join(corrupt))
    state, numbers = follow_all(EventFollower(tmp_path))
    assert numbers == [1, 6] and len(state.epochs) == 1
    assert [p.line_number for p in state.problems] == [2, 3, 4, 5] and state.problem_count == 4
    assert "not valid JSON" in state.problems[0].message and "skipped" in state.problems[0].message
    assert "UTF-8" in state.problems[1].message and "empty line" in state.problems[2].message
    assert "unknown type 'no_such_event'" in state.problems[3].message


def test_missing_directory_missing_file_and_a_file_instead_of_a_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "later" / "run"
    follower = EventFollower(run_dir)
    assert follower.poll().status is FollowStatus.NO_DIRECTORY
    assert "does not exist yet: waiting" in status_message(FollowStatus.NO_DIRECTORY, run_dir)
    run_dir.mkdir(parents=True)
    assert follower.poll().status is FollowStatus.NO_EVENTS_FILE
    assert "no events yet" in status_message(FollowStatus.NO_EVENTS_FILE, run_dir)
    (run_dir / "events.jsonl").write_text("", encoding="utf-8")
    result = follower.poll()
    assert result.status is FollowStatus.FOLLOWING and result.events == []
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    assert EventFollower(a_file).poll().status is FollowStatus.NOT_A_DIRECTORY


def test_a_replaced_or_truncated_file_starts_over(tmp_path: Path, train_run: tuple[Path, dict[str, Any]]) -> None:
    lines = (train_run[0] / "events.jsonl").read_bytes().splitlines(keepends=True)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines[:3]))
    follower = EventFollower(tmp_path)
    assert len(follower.poll().events) == 3
    os.unlink(path)  # a fresh run in the same directory deletes and recreates the file
    path.write_bytes(b"".join(lines[:2]))
    result = follower.poll()
    assert result.restarted and [n for n, _ in result.events] == [1, 2]
    path.write_bytes(lines[0])  # truncated in place
    result = follower.poll()
    assert result.restarted and [n for n, _ in result.events] == [1]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_chunking_of_appends_gives_the_same_events(
    tmp_path_factory: pytest.TempPathFactory, train_run: tuple[Path, dict[str, Any]], data: st.DataObject
) -> None:
    whole = (train_run[0] / "events.jsonl").read_bytes()[:6000]
    whole = whole[: whole.rfind(b"\n") + 1]
    cuts = sorted(data.draw(st.sets(st.integers(1, len(whole) - 1), max_size=12)))
    budget = data.draw(st.integers(50, 4000))
    run_dir = tmp_path_factory.mktemp("chunks")
    path = run_dir / "events.jsonl"
    path.write_bytes(b"")
    follower = EventFollower(run_dir, max_bytes_per_poll=budget)
    seen: list[int] = []
    for start, end in zip([0, *cuts], [*cuts, len(whole)], strict=True):
        with open(path, "ab") as handle:
            handle.write(whole[start:end])
        _, numbers = follow_all(follower)
        seen += numbers
    assert seen == list(range(1, whole.count(b"\n") + 1))


def test_the_cost_per_line_is_small() -> None:
    measured = cost.measure(2000)
    assert measured.lines == 4001 and measured.polls >= 1
    # Measured about 110 µs per line on a busy 2-core box; 2 ms would make a 10,000-epoch replay crawl.
    assert measured.microseconds_per_line < 2000, measured


def test_end_reason_is_the_latest_seeds_prune_or_fossilize() -> None:
    view = SlotView("r0c0")
    assert view.end_reason is None
    view.changes += [StageChange(3, "attention", "DORMANT", "GERMINATED", "germinate attention")]
    assert view.end_reason is None  # alive
    view.gates.append(GateRecord(7, "G5", "FOSSILIZED", False, ("stage is HOLDING",), ("contribution > 0.0 pt",), ""))
    view.changes += [
        StageChange(7, "attention", "HOLDING", "PRUNED", "prune: contribution -1.0 pt"),
        StageChange(8, "attention", "PRUNED", "EMBARGOED", "embargo"),
    ]
    assert view.end_reason == "PRUNED at epoch 7: prune: contribution -1.0 pt (failed: contribution > 0.0 pt)"
    view.changes.append(StageChange(12, "conv_light", "DORMANT", "GERMINATED", "germinate conv_light"))
    assert view.end_reason is None  # a new seed lives in the slot


def test_ppo_events_fill_envs_returns_rounds_and_components() -> None:
    state = RunState()
    for epoch in (1, 2):
        for env in (0, 1):
            state.apply(ev.RewardComputed(epoch=epoch, env=env, total=0.5 * (env + 1), components={"pbrs": 0.25}))
    state.apply(ev.ControllerDecision(epoch=2, env=1, controller="policy", op="GERMINATE", slot="r0c1",
                                      blueprint="conv_light", params={}, executed=True, reason="policy"))
    assert state.kind == "ppo" and state.envs[1].episode_return == 2.0 and state.envs[1].last_action == "GERMINATE r0c1"
    assert state.reward_components() == ("this round", {"pbrs": 0.25})
    state.apply(ev.PpoUpdate(epoch=2, round=0, metrics={"entropy": 0.5, "action_share/WAIT": 0.75,
                                                        "action_share/GERMINATE": 0.25}))
    assert state.round == 1 and state.envs[0].last_return == 1.0 and state.envs[0].episode_return == 0.0
    assert state.action_mix() == {"WAIT": 0.75, "GERMINATE": 0.25}
    assert state.reward_components() == ("last round", {"pbrs": 0.25})
    state.apply(ev.RewardComputed(epoch=1, env=0, total=-0.25, components={"pbrs": -1.0}))
    assert state.envs[0].episode_return == -0.25 and state.envs[0].last_return == 1.0
