"""Strict reading of persisted data: one clear error naming every bad path.

Persisted data is never read with `.get(key, default)`, which would turn a damaged
file into silently wrong state: it is validated against a strict pydantic model (`extra="forbid"`,
`strict=True`), and pydantic's errors are rewritten as
`path > to > field: expected X, got Y` lines inside one `CheckpointError`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from esper.checkpoints.errors import CheckpointError
from esper.contracts.validation import join_path, type_name, validation_problems

ModelT = TypeVar("ModelT", bound=BaseModel)


def validate(model_type: type[ModelT], data: object, where: str = "") -> ModelT:
    """Validate primitive `data` against a strict model; raise one CheckpointError listing every problem."""
    try:
        return model_type.model_validate(data, strict=True)
    except ValidationError as exc:
        raise CheckpointError.many(validation_problems(model_type, exc, where)) from None


def require_keys(data: object, expected: set[str], where: str) -> dict[str, Any]:
    """Check a dict whose keys are dynamic: exactly `expected`, all strings.

    Returns the dict so callers can index it directly afterwards.
    """
    if type(data) is not dict:
        raise CheckpointError.at(where, f"expected dict, got {type_name(data)}")
    problems: list[tuple[str, str]] = []
    for key in data:
        if type(key) is not str:
            problems.append((join_path(where, repr(key)), f"dict key: expected str, got {type_name(key)}"))
    present = {key for key in data if type(key) is str}
    problems += [(join_path(where, key), "missing required key") for key in sorted(expected - present)]
    problems += [(join_path(where, key), "unknown key") for key in sorted(present - expected)]
    if problems:
        raise CheckpointError.many(problems)
    return data
