"""Typed telemetry events: construction, strictness, JSON round trips, parsing errors."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from esper.contracts.schema import TELEMETRY_EVENT_VERSION
from esper.contracts.stages import SeedStage
from esper.telemetry.events import (
    EVENT_TYPES,
    BackendFailed,
    ContributionMeasured,
    ControllerDecision,
    EpochMetrics,
    Event,
    GateEvaluated,
    GovernorAction,
    ImitationUpdate,
    PpoUpdate,
    RewardComputed,
    RunFinished,
    RunStarted,
    SeedStageChanged,
    SlotSnapshot,
    TelemetryEvent,
    event_to_json,
    parse_event,
)
from esper.telemetry.replay import iter_events, read_events


def _snapshot(**overrides: object) -> SlotSnapshot:
    fields = {"stage": "BLENDING", "blueprint": "conv_light", "alpha": 0.4, "contribution": 1.25}
    return SlotSnapshot(**(fields | {"epochs_in_stage": 2} | overrides))


def sample_events() -> list[TelemetryEvent]:
    """One valid instance of every event type."""
    return [
        RunStarted(
            epoch=-1,
            task="mnist1d",
            controller="heuristic",
            seed=7,
            config={"epochs": 25, "lr": 0.01, "nested": {"slots": ["r0c0"], "flag": True, "none": None}},
            versions={"esper": "0.1.0", "torch": "2.13.0"},
            slots=["r0c0", "r0c1"],
            host_params=12345,
            plan={"epochs": 25, "optimizer": {"kind": "sgd", "host_lr": 0.05}},
        ),
        EpochMetrics(
            epoch=3,
            train_loss=0.5,
            train_accuracy=80.0,
            val_loss=0.6,
            val_accuracy=78.5,
            host_params=1000,
            seed_params=50,
            total_params=1050,
            lr=0.01,
            slots={
                "r0c0": _snapshot(),
                "r0c1": _snapshot(stage="DORMANT", blueprint=None, alpha=0.0, contribution=None),
            },
        ),
        SeedStageChanged(
            epoch=4,
            slot="r0c0",
            blueprint="conv_light",
            from_stage="TRAINING",
            to_stage="BLENDING",
            reason="G2 passed",
            alpha=0.0,
            seed_params=50,
        ),
        GateEvaluated(
            epoch=4,
            slot="r0c0",
            gate="G2",
            target_stage="BLENDING",
            passed=False,
            score=0.3,
            checks_passed=["epochs_in_stage"],
            checks_failed=["improvement"],
            message="improvement 0.2 pp < 0.5 pp",
        ),
        ContributionMeasured(
            epoch=5, slot="r0c0", contribution=1.5, velocity=0.45, interactions={"r0c1": -0.2}
        ),
        GovernorAction(epoch=6, action="rollback", reason="loss is NaN", rollbacks=1, pruned_slots=["r0c0"]),
        ControllerDecision(
            epoch=6,
            controller="heuristic",
            op="GERMINATE",
            slot="r0c1",
            blueprint="attention",
            params={"tempo": 5, "alpha_target": 1.0, "style": "LINEAR_ADD"},
            executed=True,
            reason="plateau",
        ),
        RewardComputed(epoch=6, total=-0.25, components={"rent": -0.3, "pbrs": 0.05}),
        PpoUpdate(epoch=24, round=3, metrics={"policy_loss": 0.01, "approx_kl": 0.004}),
        ImitationUpdate(epoch=0, pass_index=2, metrics={"bc_loss": 1.2, "expert_prob": 0.6}),
        RunFinished(
            epoch=24, summary={"final_val_accuracy": 91.2, "fossilized": ["r0c0"]}, reason="max epochs"
        ),
        BackendFailed(epoch=6, backend="tensorboard", error="OSError: disk full"),
    ]


def test_samples_cover_every_event_type() -> None:
    assert sorted(event.type for event in sample_events()) == sorted(EVENT_TYPES)


def test_event_types_registry_matches_the_discriminated_union() -> None:
    union_members = get_args(get_args(Event)[0])
    assert set(union_members) == set(EVENT_TYPES.values())
    assert set(TelemetryEvent.__subclasses__()) == set(EVENT_TYPES.values())


@pytest.mark.parametrize("event", sample_events(), ids=lambda event: event.type)
def test_round_trip_through_json_line_and_dict(event: TelemetryEvent) -> None:
    line = event_to_json(event)
    assert "\n" not in line
    assert ": " not in line.split('"time"')[0]  # compact separators
    parsed = parse_event(line)
    assert type(parsed) is type(event)
    assert parsed == event
    assert parse_event(json.loads(line)) == event


@pytest.mark.parametrize("event", sample_events(), ids=lambda event: event.type)
def test_every_line_starts_with_the_common_header(event: TelemetryEvent) -> None:
    data = json.loads(event_to_json(event))
    assert list(data)[:6] == ["type", "version", "epoch", "time", "run_id", "env"]
    assert data["version"] == TELEMETRY_EVENT_VERSION


def test_default_time_is_utc_iso_with_microseconds() -> None:
    before = datetime.now(UTC)
    event = BackendFailed(epoch=0, backend="x", error="e")
    stamp = datetime.fromisoformat(event.time)
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
    assert len(event.time.split(".")[1].split("+")[0]) == 6
    assert before <= stamp <= datetime.now(UTC)


def test_nan_and_infinite_losses_round_trip() -> None:
    event = EpochMetrics(
        epoch=2,
        train_loss=math.nan,
        train_accuracy=10.0,
        val_loss=math.inf,
        val_accuracy=-math.inf,
        host_params=1,
        seed_params=0,
        total_params=1,
        slots={},
    )
    line = event_to_json(event)
    # Strict JSON: no bare NaN/Infinity tokens; non-finite floats are the strings below.
    data = json.loads(line, parse_constant=_reject_constant)
    assert (data["train_loss"], data["val_loss"], data["val_accuracy"]) == ("NaN", "Infinity", "-Infinity")
    parsed = parse_event(line)
    assert isinstance(parsed, EpochMetrics)
    assert math.isnan(parsed.train_loss)
    assert parsed.val_loss == math.inf and parsed.val_accuracy == -math.inf


def _reject_constant(name: str) -> object:
    raise ValueError(f"bare {name} is not strict JSON")


def test_only_the_three_exact_spellings_read_as_non_finite() -> None:
    line = event_to_json(RewardComputed(epoch=1, total=1.0, components={}))
    for spelling in ("nan", "inf", "Inf", "+Infinity", "NaN "):
        with pytest.raises(ValueError, match=r"reward_computed\.total"):
            parse_event(line.replace('"total":1.0', f'"total":"{spelling}"'))


def test_a_controller_decision_refuses_non_finite_params() -> None:
    with pytest.raises(ValidationError, match="params\\['alpha'\\]: expected a finite number"):
        ControllerDecision(
            epoch=1, controller="c", op="WAIT", slot=None, blueprint=None, params={"alpha": math.nan},
            executed=True, reason="",
        )  # fmt: skip


def test_events_are_frozen() -> None:
    event = sample_events()[2]
    with pytest.raises(ValidationError):
        event.epoch = 10  # type: ignore[misc]


def test_base_event_cannot_be_constructed() -> None:
    with pytest.raises(TypeError, match="abstract"):
        TelemetryEvent(type="anything", epoch=0)


@pytest.mark.parametrize(
    ("cls", "fields", "bad_field"),
    [
        (BackendFailed, {"epoch": "3", "backend": "b", "error": "e"}, "epoch"),
        (BackendFailed, {"epoch": 3.0, "backend": "b", "error": "e"}, "epoch"),
        (BackendFailed, {"epoch": -2, "backend": "b", "error": "e"}, "epoch"),
        (BackendFailed, {"epoch": 0, "env": -1, "backend": "b", "error": "e"}, "env"),
        (BackendFailed, {"epoch": 0, "backend": 5, "error": "e"}, "backend"),
        (BackendFailed, {"epoch": 0, "version": 99, "backend": "b", "error": "e"}, "version"),
        (BackendFailed, {"epoch": 0, "time": "yesterday", "backend": "b", "error": "e"}, "time"),
        (BackendFailed, {"epoch": 0, "time": "2024-01-01T00:00:00", "backend": "b", "error": "e"}, "time"),
        (BackendFailed, {"epoch": 0, "type": "run_finished", "backend": "b", "error": "e"}, "type"),
        (RewardComputed, {"epoch": 0, "total": "1.0", "components": {}}, "total"),
        (RewardComputed, {"epoch": 0, "total": 1.0, "components": {"rent": "x"}}, "components.rent"),
        (GovernorAction, {"epoch": 0, "action": "explode", "reason": "", "rollbacks": 0}, "action"),
        (GovernorAction, {"epoch": 0, "action": "abort", "reason": "", "rollbacks": -1}, "rollbacks"),
        (GateEvaluated, {**sample_events()[3].model_dump(), "passed": 1}, "passed"),
        (GateEvaluated, {**sample_events()[3].model_dump(), "gate": "G4"}, "gate"),
        (GateEvaluated, {**sample_events()[3].model_dump(), "target_stage": "PROBATIONARY"}, "target_stage"),
        (SeedStageChanged, {**sample_events()[2].model_dump(), "slot": "slot0"}, "slot"),
        (SeedStageChanged, {**sample_events()[2].model_dump(), "alpha": 1.5}, "alpha"),
        (SeedStageChanged, {**sample_events()[2].model_dump(), "to_stage": "training"}, "to_stage"),
        (RunStarted, {**sample_events()[0].model_dump(), "config": {"t": (1, 2)}}, "config"),
        (RunStarted, {**sample_events()[0].model_dump(), "versions": {"torch": 2}}, "versions.torch"),
        (ControllerDecision, {**sample_events()[6].model_dump(), "params": {"x": None}}, "params"),
        (PpoUpdate, {"epoch": 0, "round": -1, "metrics": {}}, "round"),
    ],
)
def test_wrong_field_types_and_values_are_rejected(
    cls: type[TelemetryEvent], fields: dict[str, object], bad_field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        cls(**fields)
    locations = {".".join(str(part) for part in error["loc"]) for error in caught.value.errors()}
    assert any(location.startswith(bad_field) for location in locations), locations


def test_extra_keys_are_rejected_at_top_level_and_nested() -> None:
    with pytest.raises(ValidationError, match="extra"):
        BackendFailed(epoch=0, backend="b", error="e", surprise=1)  # type: ignore[call-arg]
    data = json.loads(event_to_json(sample_events()[1]))
    data["slots"]["r0c0"]["colour"] = "red"
    with pytest.raises(ValueError, match=r"epoch_metrics\.slots\.r0c0\.colour"):
        parse_event(data)


def test_discriminated_parsing_picks_the_class_from_type() -> None:
    for event in sample_events():
        assert type(parse_event(event_to_json(event))) is EVENT_TYPES[event.type]


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("{", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"epoch": 0}', "missing field 'type'"),
        ('{"type": "seed_sprouted", "epoch": 0}', "unknown type 'seed_sprouted'"),
        ('{"type": ["run_started"], "epoch": 0}', r"unknown type \['run_started'\]"),
        ('{"type": "backend_failed", "epoch": 0, "backend": "b"}', r"backend_failed\.error: field required"),
        (
            '{"type": "reward_computed", "epoch": 0, "total": "high", "components": {}}',
            r"reward_computed\.total: .*valid number.*'high'",
        ),
        (
            '{"type": "ppo_update", "epoch": 0, "round": 1.0, "metrics": {}}',
            r"ppo_update\.round: .*valid integer",
        ),
        (
            '{"type": "backend_failed", "epoch": 0, "backend": "b", "error": "e", "error": "f"}',
            "duplicate key 'error'",
        ),
        (
            '{"type": "backend_failed", "epoch": 0, "backend": "b", "error": "e", "version": 99}',
            r"backend_failed\.version: unknown telemetry event version 99",
        ),
    ],
)
def test_parse_event_errors_name_the_problem(line: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        parse_event(line)


def test_parse_event_rejects_non_text_input() -> None:
    with pytest.raises(ValueError, match="expected a JSON line"):
        parse_event(b'{"type": "backend_failed"}')  # type: ignore[arg-type]


def test_event_to_json_rejects_non_events() -> None:
    with pytest.raises(TypeError, match="expected a TelemetryEvent"):
        event_to_json({"type": "backend_failed"})  # type: ignore[arg-type]


# ---------------------------------------------------------------- replay of events.jsonl


def test_read_events_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = event_to_json(BackendFailed(epoch=0, backend="b", error="e"))
    bad = '{"type": "backend_failed", "epoch": "x", "backend": "b", "error": "e"}'
    cases = [
        (f"{good}\n{good}\n{bad}\n", r"events\.jsonl:3: telemetry event: backend_failed\.epoch"),
        (f"{good}\n\n", r":2: empty line"),
        (f"{good}\n{good[:20]}", r":2: unterminated last line"),
    ]
    for text, pattern in cases:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=pattern):
            read_events(path)
    path.write_bytes(good.encode() + b"\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r":2: not valid UTF-8"):
        read_events(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_events(tmp_path / "missing.jsonl")


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def test_iter_events_follows_a_growing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    first, second, third = (event_to_json(BackendFailed(epoch=e, backend="b", error="e")) for e in range(3))
    # Each poll at the end of the file plays the writer's next move.
    moves = [
        lambda: _append(path, first + "\n" + second[:15]),  # the file appears, line 2 is partial
        lambda: _append(path, second[15:] + "\n"),
        lambda: _append(path, third + "\n"),
    ]

    def should_stop() -> bool:
        if moves:
            moves.pop(0)()
            return False
        return True

    followed = iter_events(path, follow=True, poll_seconds=0.001, should_stop=should_stop)
    assert [event.epoch for event in followed] == [0, 1, 2]
    assert moves == []
    with pytest.raises(ValueError, match="poll_seconds"):
        list(iter_events(path, follow=True, poll_seconds=0))


# ---------------------------------------------------------------- hypothesis

_names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_slot_ids = st.builds(lambda r, c: f"r{r}c{c}", st.integers(0, 9), st.integers(0, 9))
_stages = st.sampled_from(list(SeedStage.__members__))
_any_float = st.floats(allow_nan=True, allow_infinity=True)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_counts = st.integers(min_value=0, max_value=10**12)
_common = {
    "epoch": st.integers(min_value=-1, max_value=10**6),
    "run_id": _names,
    "env": st.none() | st.integers(min_value=0, max_value=64),
}
_snapshots = st.builds(
    SlotSnapshot,
    stage=_stages,
    blueprint=st.none() | _names,
    alpha=st.floats(min_value=0.0, max_value=1.0),
    contribution=st.none() | _any_float,
    epochs_in_stage=st.integers(min_value=0, max_value=1000),
)

_hypothesis_events = st.one_of(
    st.builds(
        EpochMetrics,
        **_common,
        train_loss=_any_float,
        train_accuracy=_finite,
        val_loss=_any_float,
        val_accuracy=_finite,
        host_params=_counts,
        seed_params=_counts,
        total_params=_counts,
        lr=st.none() | _finite,
        slots=st.dictionaries(_slot_ids, _snapshots, max_size=4),
    ),
    st.builds(
        ControllerDecision,
        **_common,
        controller=_names,
        op=st.sampled_from(["WAIT", "GERMINATE", "PRUNE", "FOSSILIZE"]),
        slot=st.none() | _slot_ids,
        blueprint=st.none() | _names,
        params=st.dictionaries(_names, st.integers(-(10**9), 10**9) | _finite | _names, max_size=4),
        executed=st.booleans(),
        reason=_names,
    ),
    st.builds(RewardComputed, **_common, total=_any_float, components=st.dictionaries(_names, _any_float)),
    st.builds(RunFinished, **_common, summary=st.dictionaries(_names, _any_float, max_size=4), reason=_names),
    st.builds(
        GateEvaluated,
        **_common,
        slot=_slot_ids,
        gate=st.sampled_from(["G0", "G1", "G2", "G3", "G5"]),
        target_stage=_stages,
        passed=st.booleans(),
        score=_finite,
        checks_passed=st.lists(_names, max_size=3),
        checks_failed=st.lists(_names, max_size=3),
        message=_names,
    ),
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(event=_hypothesis_events)
def test_hypothesis_round_trip(event: TelemetryEvent) -> None:
    line = event_to_json(event)
    json.loads(line, parse_constant=_reject_constant)  # any strict JSON parser reads every line
    parsed = parse_event(line)
    assert type(parsed) is type(event)
    # Compare serialised forms: NaN != NaN would make model equality fail for equal events.
    assert event_to_json(parsed) == line
    assert event_to_json(parse_event(json.loads(line))) == line
