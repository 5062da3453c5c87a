"""Typed telemetry events: the only place event types are defined.

Each event is one self-contained JSON line of `events.jsonl`, so a reader
(the live dashboard, a report, a test) can rebuild a run without the process.
Field names are a contract other packages code against: rename nothing.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from esper.contracts.gates import GateLevel
from esper.contracts.schema import TELEMETRY_EVENT_CHANGELOG, TELEMETRY_EVENT_VERSION
from esper.contracts.slot_ids import parse_slot_id
from esper.contracts.stages import SeedStage
from esper.telemetry.strict_json import JsonFloat


def utc_now_iso() -> str:
    """Current time as ISO 8601 UTC with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _check_stage_name(value: str) -> str:
    if value not in SeedStage.__members__:
        raise ValueError(f"expected a SeedStage name (one of {list(SeedStage.__members__)}), got {value!r}")
    return value


def _check_gate_name(value: str) -> str:
    if value not in GateLevel.__members__:
        raise ValueError(f"expected a gate name (one of {list(GateLevel.__members__)}), got {value!r}")
    return value


def _check_slot_id(value: str) -> str:
    parse_slot_id(value)  # raises ValueError naming the expected form
    return value


StageName = Annotated[str, AfterValidator(_check_stage_name)]
GateName = Annotated[str, AfterValidator(_check_gate_name)]
SlotName = Annotated[str, AfterValidator(_check_slot_id)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Alpha = Annotated[float, Field(ge=0.0, le=1.0)]


class _StrictModel(BaseModel):
    # strict: no silent coercion ("3" is not an int, 1 is not a bool).
    # NaN/Inf are written as the strings "NaN", "Infinity", "-Infinity" (strict JSON has no such
    # numbers), and float fields are JsonFloat, which reads those strings back, so a diverged
    # loss round-trips exactly.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, ser_json_inf_nan="strings")


class TelemetryEvent(_StrictModel):
    """Fields every event carries. Only the subclasses below are ever emitted."""

    type: str
    version: int = TELEMETRY_EVENT_VERSION
    epoch: int = Field(ge=-1)  # host epoch; -1 before training starts
    time: str = Field(default_factory=utc_now_iso)
    run_id: str = ""
    env: NonNegativeInt | None = None  # index of the environment in a vectorised run

    def model_post_init(self, context: Any, /) -> None:
        if type(self) is TelemetryEvent:
            raise TypeError(
                "TelemetryEvent is abstract: construct one of the event types in esper.telemetry.events"
            )

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value not in TELEMETRY_EVENT_CHANGELOG:
            raise ValueError(
                f"unknown telemetry event version {value}; this build reads versions "
                f"{sorted(TELEMETRY_EVENT_CHANGELOG)}"
            )
        return value

    @field_validator("time")
    @classmethod
    def _utc_iso_time(cls, value: str) -> str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as error:
            raise ValueError(f"expected an ISO 8601 timestamp, got {value!r}") from error
        offset = parsed.utcoffset()
        if offset is None or offset.total_seconds() != 0:
            raise ValueError(f"expected a UTC timestamp (offset +00:00), got {value!r}")
        return value


class SlotSnapshot(_StrictModel):
    """One slot's state at the end of an epoch."""

    stage: StageName
    blueprint: str | None
    alpha: Alpha
    contribution: JsonFloat | None  # None: not measured this epoch
    epochs_in_stage: NonNegativeInt


class RunStarted(TelemetryEvent):
    type: Literal["run_started"] = "run_started"
    task: str
    controller: str
    seed: int
    config: dict[str, JsonValue]
    versions: dict[str, str]
    slots: list[SlotName]
    host_params: NonNegativeInt
    # The resolved run plan (esper.training.plan.RunPlan): the values the run used, where
    # `config` holds what was asked for (None in a task default). Events before version 3 have none.
    plan: dict[str, JsonValue] | None = None

    @model_validator(mode="after")
    def _plan_from_version_3(self) -> RunStarted:
        if self.version >= 3 and self.plan is None:
            raise ValueError("plan: required from event version 3 on (the resolved run plan)")
        if self.version < 3 and self.plan is not None:
            raise ValueError(f"plan: not part of event version {self.version} (added in version 3)")
        return self


class EpochMetrics(TelemetryEvent):
    type: Literal["epoch_metrics"] = "epoch_metrics"
    train_loss: JsonFloat
    train_accuracy: JsonFloat
    val_loss: JsonFloat
    val_accuracy: JsonFloat
    host_params: NonNegativeInt
    seed_params: NonNegativeInt
    total_params: NonNegativeInt
    lr: JsonFloat | None = None
    slots: dict[SlotName, SlotSnapshot]


class SeedStageChanged(TelemetryEvent):
    type: Literal["seed_stage_changed"] = "seed_stage_changed"
    slot: SlotName
    blueprint: str | None
    from_stage: StageName
    to_stage: StageName
    reason: str
    alpha: Alpha
    seed_params: NonNegativeInt


class GateEvaluated(TelemetryEvent):
    type: Literal["gate_evaluated"] = "gate_evaluated"
    slot: SlotName
    gate: GateName
    target_stage: StageName
    passed: bool
    score: JsonFloat
    checks_passed: list[str]
    checks_failed: list[str]
    message: str


class ContributionMeasured(TelemetryEvent):
    type: Literal["contribution_measured"] = "contribution_measured"
    slot: SlotName
    contribution: JsonFloat  # accuracy points: all as is minus this seed off
    velocity: JsonFloat
    interactions: dict[str, JsonFloat] = Field(default_factory=dict)


class GovernorAction(TelemetryEvent):
    type: Literal["governor_action"] = "governor_action"
    action: Literal["snapshot", "rollback", "abort"]
    reason: str
    rollbacks: NonNegativeInt
    pruned_slots: list[SlotName] = Field(default_factory=list)


class ControllerDecision(TelemetryEvent):
    type: Literal["controller_decision"] = "controller_decision"
    controller: str
    op: str
    slot: SlotName | None
    blueprint: str | None
    # A param may be a string, so "NaN" could not be told from a name: params must be finite.
    params: dict[str, float | int | str]
    executed: bool
    reason: str

    @field_validator("params")
    @classmethod
    def _finite_params(cls, value: dict[str, float | int | str]) -> dict[str, float | int | str]:
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"params[{key!r}]: expected a finite number, got {item!r}")
        return value


class RewardComputed(TelemetryEvent):
    type: Literal["reward_computed"] = "reward_computed"
    total: JsonFloat
    components: dict[str, JsonFloat]


class PpoUpdate(TelemetryEvent):
    type: Literal["ppo_update"] = "ppo_update"
    round: NonNegativeInt
    metrics: dict[str, JsonFloat]


class ImitationUpdate(TelemetryEvent):
    """One pass of behaviour cloning over the expert's demonstrations, before PPO starts."""

    type: Literal["imitation_update"] = "imitation_update"
    pass_index: NonNegativeInt
    metrics: dict[str, JsonFloat]


class RunFinished(TelemetryEvent):
    type: Literal["run_finished"] = "run_finished"
    summary: dict[str, JsonValue]
    reason: str


class BackendFailed(TelemetryEvent):
    type: Literal["backend_failed"] = "backend_failed"
    backend: str
    error: str


Event = Annotated[
    RunStarted
    | EpochMetrics
    | SeedStageChanged
    | GateEvaluated
    | ContributionMeasured
    | GovernorAction
    | ControllerDecision
    | RewardComputed
    | PpoUpdate
    | ImitationUpdate
    | RunFinished
    | BackendFailed,
    Field(discriminator="type"),
]

EVENT_TYPES: dict[str, type[TelemetryEvent]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        RunStarted,
        EpochMetrics,
        SeedStageChanged,
        GateEvaluated,
        ContributionMeasured,
        GovernorAction,
        ControllerDecision,
        RewardComputed,
        PpoUpdate,
        ImitationUpdate,
        RunFinished,
        BackendFailed,
    )
}

_EVENT_ADAPTER: TypeAdapter[TelemetryEvent] = TypeAdapter(Event)
_MAX_SHOWN_INPUT = 80


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"]) or "<event>"
        if item["type"] == "missing":
            problems.append(f"{path}: field required")
            continue
        if item["type"] == "value_error":
            # Our own validators already say what they got.
            problems.append(f"{path}: {item['msg'].removeprefix('Value error, ')}")
            continue
        shown = repr(item["input"])
        if len(shown) > _MAX_SHOWN_INPUT:
            shown = shown[: _MAX_SHOWN_INPUT - 3] + "..."
        problems.append(f"{path}: {item['msg']} (got {shown})")
    return "; ".join(problems)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"telemetry event: duplicate key {key!r}")
        result[key] = value
    return result


def parse_event(line: str | dict[str, Any]) -> TelemetryEvent:
    """Parse one JSON line (or its decoded dict) into its typed event; strict.

    Raises ValueError naming the field path and the problem for anything that
    is not exactly an event this build knows.
    """
    if isinstance(line, str):
        try:
            data = json.loads(line, object_pairs_hook=_reject_duplicate_keys)
        except json.JSONDecodeError as error:
            problem = f"{error.msg} at column {error.colno}"
            raise ValueError(f"telemetry event: not valid JSON ({problem})") from error
    elif isinstance(line, dict):
        data = line
    else:
        raise ValueError(f"telemetry event: expected a JSON line (str) or a dict, got {type(line).__name__}")
    if not isinstance(data, dict):
        raise ValueError(f"telemetry event: expected a JSON object, got {type(data).__name__}")
    if "type" not in data:
        raise ValueError(f"telemetry event: missing field 'type' (expected one of {sorted(EVENT_TYPES)})")
    if not isinstance(data["type"], str) or data["type"] not in EVENT_TYPES:
        raise ValueError(
            f"telemetry event: unknown type {data['type']!r} (expected one of {sorted(EVENT_TYPES)})"
        )
    try:
        return _EVENT_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise ValueError(f"telemetry event: {_describe(error)}") from error


def event_to_json(event: TelemetryEvent) -> str:
    """One compact JSON line (no trailing newline) that `parse_event` reads back."""
    if not isinstance(event, TelemetryEvent):
        raise TypeError(f"event_to_json: expected a TelemetryEvent, got {type(event).__name__}")
    return event.model_dump_json()
