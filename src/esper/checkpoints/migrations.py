"""Schema migrations: an explicit chain of one-step upgrades per checkpoint format.

A migration maps a payload of version v to version v+1. Loading applies the
chain from the file's version up to the current one; a missing step or a
version newer than this esper knows raises `CheckpointError` instead of
guessing: an unknown schema version fails loudly instead of being read as a known one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from esper.checkpoints.errors import CheckpointError
from esper.contracts.schema import (
    AGENT_CHECKPOINT_FORMAT,
    AGENT_CHECKPOINT_VERSION,
    MODEL_CHECKPOINT_FORMAT,
    MODEL_CHECKPOINT_VERSION,
    RUN_CHECKPOINT_FORMAT,
    RUN_CHECKPOINT_VERSION,
)

Payload = dict[str, Any]
Migration = Callable[[Payload], Payload]

VERSION_KEY = "schema_version"

# The version this esper writes, per format.
CURRENT_VERSIONS: dict[str, int] = {
    MODEL_CHECKPOINT_FORMAT: MODEL_CHECKPOINT_VERSION,
    RUN_CHECKPOINT_FORMAT: RUN_CHECKPOINT_VERSION,
    AGENT_CHECKPOINT_FORMAT: AGENT_CHECKPOINT_VERSION,
}

# (format, from_version) -> function upgrading that version by one.
_REGISTRY: dict[tuple[str, int], Migration] = {}


def register_migration(format: str, from_version: int) -> Callable[[Migration], Migration]:
    """Decorator: register `fn(payload_v) -> payload_v_plus_1` for `format`."""
    if type(from_version) is not int:
        raise TypeError(f"from_version must be int, got {type(from_version).__name__}")

    def decorator(fn: Migration) -> Migration:
        key = (format, from_version)
        if key in _REGISTRY:
            raise ValueError(f"a migration for {format!r} from version {from_version} is already registered")
        _REGISTRY[key] = fn
        return fn

    return decorator


def current_version(format: str) -> int:
    """The schema version this esper writes for `format`."""
    if format not in CURRENT_VERSIONS:
        known = ", ".join(repr(name) for name in sorted(CURRENT_VERSIONS))
        raise CheckpointError.at("format", f"unknown checkpoint format {format!r} (known: {known})")
    return CURRENT_VERSIONS[format]


def supported_versions(format: str) -> list[int]:
    """Versions that load: the current one and every version with an unbroken chain up to it."""
    version = current_version(format)
    supported = [version]
    while (format, version - 1) in _REGISTRY:
        version -= 1
        supported.append(version)
    return sorted(supported)


def migrate(payload: Payload, format: str) -> Payload:
    """Upgrade `payload` (with an int `schema_version`) to the current version of `format`."""
    if VERSION_KEY not in payload:
        raise CheckpointError.at(VERSION_KEY, "missing required key")
    version = payload[VERSION_KEY]
    if type(version) is not int:
        raise CheckpointError.at(VERSION_KEY, f"expected int, got {type(version).__name__}")
    target = current_version(format)
    if version == target:
        return payload
    supported = ", ".join(str(v) for v in supported_versions(format))
    if version > target:
        raise CheckpointError.at(
            VERSION_KEY,
            f"version {version} of {format!r} is newer than this esper supports (supported: {supported});"
            " upgrade esper to read it",
        )
    result = payload
    for step in range(version, target):
        if (format, step) not in _REGISTRY:
            raise CheckpointError.at(
                VERSION_KEY,
                f"version {version} of {format!r} cannot be read: no migration from version {step} to"
                f" {step + 1} (supported: {supported})",
            )
        upgraded = _REGISTRY[(format, step)](dict(result))
        if type(upgraded) is not dict:
            raise TypeError(
                f"migration of {format!r} from version {step} returned {type(upgraded).__name__},"
                " expected dict"
            )
        upgraded[VERSION_KEY] = step + 1
        result = upgraded
    return result


@register_migration(RUN_CHECKPOINT_FORMAT, 1)
def _run_v1_to_v2(payload: Payload) -> Payload:
    # Version 1 did not record which events it commits; None says so (such a checkpoint
    # still loads for export and audit, but cannot be resumed exactly).
    payload["events"] = None
    return payload


@register_migration(RUN_CHECKPOINT_FORMAT, 2)
def _run_v2_to_v3(payload: Payload) -> Payload:
    # Version 2 runs drew on CUDA from the process's generator, which the checkpoint did not
    # hold: None (no CUDA generator of the run's own yet) is what they resume with. A
    # malformed run section is left as it is for validation to report by path.
    run = payload.get("run")
    if not isinstance(run, dict) or not isinstance(run.get("rng"), dict):
        return payload
    rng = run["rng"]
    if "cuda" in rng:
        raise CheckpointError.at("run > rng > cuda", "unknown key (version 2 has no CUDA generator state)")
    payload["run"] = {**run, "rng": {**rng, "cuda": None}}
    return payload
