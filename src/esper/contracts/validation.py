"""Turn pydantic validation errors into "path > to > key: expected X, got Y" lines.

The one formatter of validation problems: checkpoints (esper.checkpoints.strict)
and config files (esper.training.config) both report through it. Plain Python
and pydantic only, no torch.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from pydantic import BaseModel, ValidationError

PATH_SEPARATOR = " > "


def join_path(*parts: str | int) -> str:
    """Join path parts with " > ", skipping empty parts; list indices become "[i]"."""
    rendered: list[str] = []
    for part in parts:
        if isinstance(part, bool):
            raise TypeError(f"path part must be str or int, got bool {part!r}")
        if isinstance(part, int):
            rendered.append(f"[{part}]")
        elif part:
            rendered.append(part)
    return PATH_SEPARATOR.join(rendered)


# Errors about a value of the right type but outside its constraints: "got" shows the value.
_CONSTRAINT_PHRASES: dict[str, str] = {
    "greater_than": "a value > {gt}",
    "greater_than_equal": "a value >= {ge}",
    "less_than": "a value < {lt}",
    "less_than_equal": "a value <= {le}",
    "multiple_of": "a multiple of {multiple_of}",
    "finite_number": "a finite number",
    "too_short": "at least {min_length} items",
    "too_long": "at most {max_length} items",
    "string_too_short": "a string of at least {min_length} characters",
    "string_too_long": "a string of at most {max_length} characters",
    "string_pattern_mismatch": "a string matching {pattern!r}",
    "literal_error": "{expected}",
    "enum": "one of {expected}",
}

# Used only when the annotation at the failing path cannot be resolved.
_TYPE_WORDS: dict[str, str] = {
    "int_type": "int",
    "float_type": "float",
    "string_type": "str",
    "bool_type": "bool",
    "dict_type": "dict",
    "model_type": "dict",
    "model_attributes_type": "dict",
    "list_type": "list",
    "tuple_type": "list",
    "none_required": "None",
}

_DICT_KEY_MARK = "[key]"


def type_name(value: object) -> str:
    """The name used after "got": the Python type of the input (None stays None)."""
    return "None" if value is None else type(value).__name__


def describe_annotation(annotation: Any) -> str:
    """Human wording of a type annotation: `float | None` -> "float or None"."""
    annotation = _unwrap_annotated(annotation)
    if annotation is None or annotation is type(None):
        return "None"
    if annotation is Any:
        return "any value"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        words = [describe_annotation(arg) for arg in args]
        words.sort(key=lambda word: word == "None")  # "float or None", never "None or float"
        return " or ".join(words)
    if origin is typing.Literal:
        return " or ".join(repr(arg) for arg in args)
    if origin is not None and isinstance(origin, type):
        inner = ", ".join("..." if arg is Ellipsis else describe_annotation(arg) for arg in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"dict ({annotation.__name__})"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(repr(member.value) for member in annotation)
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _unwrap_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _non_none_members(annotation: Any) -> list[Any] | None:
    """Members of a union other than None, or None if `annotation` is not a union."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    return [arg for arg in typing.get_args(annotation) if arg is not type(None)]


def _field_for(model: type[BaseModel], item: object) -> Any:
    for name, field in model.model_fields.items():
        if item in (name, field.alias, field.validation_alias):
            return field.annotation
    return None


def _resolve(model_type: type[BaseModel], loc: Sequence[int | str]) -> tuple[list[int | str], Any, bool]:
    """Follow a pydantic error location through the annotations.

    Returns the part of `loc` that names data (union branch tags dropped), the
    annotation found there (None if it could not be followed) and whether the
    error concerns a dict key rather than a value.
    """
    current: Any = model_type
    index = 0
    while index < len(loc):
        current = _unwrap_annotated(current)
        members = _non_none_members(current)
        if members is not None:
            if len(members) == 1:  # Optional[X]: pydantic adds no branch tag
                current = members[0]
                continue
            return list(loc[:index]), current, False  # the rest is a branch tag
        item = loc[index]
        origin = typing.get_origin(current)
        args = typing.get_args(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(item, str):
            annotation = _field_for(current, item)
            if annotation is None:
                return list(loc[: index + 1]), None, False  # unknown key: no annotation
            current = annotation
        elif origin in (list, set, frozenset) and isinstance(item, int) and args:
            current = args[0]
        elif origin is tuple and isinstance(item, int) and args:
            current = args[0] if (len(args) == 2 and args[1] is Ellipsis) else args[min(item, len(args) - 1)]
        elif origin in (dict, Mapping) and len(args) == 2:
            if index + 1 < len(loc) and loc[index + 1] == _DICT_KEY_MARK:
                return list(loc[: index + 1]), args[0], True
            current = args[1]
        else:
            return list(loc), None, False  # cannot follow further: report the full location
        index += 1
    return list(loc), current, False


def _problem(errors: list[dict[str, Any]], annotation: Any, is_key: bool) -> str:
    kinds = {error["type"] for error in errors}
    if "missing" in kinds:
        return "missing required key"
    if "extra_forbidden" in kinds:
        return "unknown key"
    first = errors[0]
    what = "dict key" if is_key else ""
    if len(errors) == 1 and first["type"] in _CONSTRAINT_PHRASES:
        # pydantic's own error record (not persisted data) has no "ctx" for e.g. finite_number.
        phrase = _CONSTRAINT_PHRASES[first["type"]].format(**first.get("ctx", {}))
        return f"{what + ': ' if what else ''}expected {phrase}, got {first['input']!r}"
    if first["type"] == "value_error":  # a model's own consistency check: its message says what is wrong
        return f"{what + ': ' if what else ''}{first['msg'].removeprefix('Value error, ')}"
    if annotation is not None:
        expected = describe_annotation(annotation)
    elif first["type"] in _TYPE_WORDS:
        expected = _TYPE_WORDS[first["type"]]
    else:  # a custom validator: its own message is the best description
        return f"{what + ': ' if what else ''}{first['msg']}, got {type_name(first['input'])}"
    return f"{what + ': ' if what else ''}expected {expected}, got {type_name(first['input'])}"


def validation_problems(model_type: type[BaseModel], exc: ValidationError, where: str = "") -> list[tuple[str, str]]:
    """(path, problem) pairs for a pydantic ValidationError, union branches merged."""
    groups: dict[tuple[tuple[int | str, ...], bool], list[dict[str, Any]]] = {}
    annotations: dict[tuple[tuple[int | str, ...], bool], Any] = {}
    for error in exc.errors():
        path, annotation, is_key = _resolve(model_type, error["loc"])
        key = (tuple(path), is_key)
        groups.setdefault(key, []).append(dict(error))
        annotations[key] = annotation
    problems: list[tuple[str, str]] = []
    for (path, is_key), errors in groups.items():
        parts = [str(part) if isinstance(part, str) else part for part in path]
        problems.append((join_path(where, *parts), _problem(errors, annotations[(path, is_key)], is_key)))
    return problems
