"""Telemetry: typed, versioned events, the per-run hub, backends and replay.

Components never write to a backend: they call an `emit` callback (usually
`TelemetryHub.emit`). Backends live in `esper.telemetry.backends`.
"""

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
from esper.telemetry.hub import Backend, BackendFailure, TelemetryHub
from esper.telemetry.replay import iter_events, read_events

__all__ = [
    "EVENT_TYPES",
    "Backend",
    "BackendFailed",
    "BackendFailure",
    "ContributionMeasured",
    "ControllerDecision",
    "EpochMetrics",
    "Event",
    "GateEvaluated",
    "GovernorAction",
    "ImitationUpdate",
    "PpoUpdate",
    "RewardComputed",
    "RunFinished",
    "RunStarted",
    "SeedStageChanged",
    "SlotSnapshot",
    "TelemetryEvent",
    "TelemetryHub",
    "event_to_json",
    "iter_events",
    "parse_event",
    "read_events",
]
