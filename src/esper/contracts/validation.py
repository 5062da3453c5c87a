"""Turn pydantic validation errors into "path > to > key: expected X, got Y" lines.

The one formatter of validation problems: checkpoints (esper.checkpoints.strict),
run and PPO config files (esper.training.config, esper.growth_rl.training) and host
configs (esper.hosts.registry) all report through it. Plain Python and
pydantic only, no torch.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, NamedTuple

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


def dotted_path(parts: Sequence[str | int]) -> str:
    """Config-file style path: "ppo.learning_rate", "widths[1]"."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part:
            text += f".{part}" if text else part
    return text


class FieldError(ValueError):
    """Raised by a model's own (cross-field) check to blame one field.

    The formatter reports it at that field's path, with `detail` as the
    problem: `kernel_size: expected an odd int >= 1, got 4`. `key` is a field
    of the model being checked (a field validator may raise it for its own field).
    """

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key
        self.detail = detail


class ConfigProblems(ValueError):
    """Problems of one config, each at a path: (path parts, problem) pairs in `problems`.

    `esper.hosts.build_host` raises it for a bad host config (its text is the
    config-file wording after `subject`: "cnn host config: widths[1]: expected
    a value >= 1, got 0"), so a caller that embeds the config (a checkpoint)
    can report each problem at its own full path. A field's own check may raise it (without a subject) after
    validating the field against another model: the formatter then reports
    the problems below the field's path (`train.epochs: expected int, got str`).
    """

    def __init__(self, problems: Sequence[tuple[tuple[int | str, ...], str]], subject: str = "") -> None:
        self.problems = list(problems)
        self.subject = subject
        text = "; ".join(f"{dotted_path(parts)}: {problem}" if parts else problem for parts, problem in problems)
        super().__init__(f"{subject}: {text}" if subject else text)


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


class _Resolved(NamedTuple):
    path: list[int | str]  # the part of the location that names data (union branch tags dropped)
    annotation: Any  # the annotation found there (None if it could not be followed)
    is_key: bool  # the error concerns a dict key rather than a value
    owner: type[BaseModel] | None = None  # for an unknown key: the model it is not a field of


def _resolve(model_type: type[BaseModel], loc: Sequence[int | str]) -> _Resolved:
    """Follow a pydantic error location through the annotations."""
    current: Any = model_type
    index = 0
    while index < len(loc):
        current = _unwrap_annotated(current)
        members = _non_none_members(current)
        if members is not None:
            if len(members) == 1:  # Optional[X]: pydantic adds no branch tag
                current = members[0]
                continue
            return _Resolved(list(loc[:index]), current, False)  # the rest is a branch tag
        item = loc[index]
        origin = typing.get_origin(current)
        args = typing.get_args(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(item, str):
            annotation = _field_for(current, item)
            if annotation is None:
                return _Resolved(list(loc[: index + 1]), None, False, owner=current)  # unknown key
            current = annotation
        elif origin in (list, set, frozenset) and isinstance(item, int) and args:
            current = args[0]
        elif origin is tuple and isinstance(item, int) and args:
            current = args[0] if (len(args) == 2 and args[1] is Ellipsis) else args[min(item, len(args) - 1)]
        elif origin in (dict, Mapping) and len(args) == 2:
            if index + 1 < len(loc) and loc[index + 1] == _DICT_KEY_MARK:
                return _Resolved(list(loc[: index + 1]), args[0], True)
            current = args[1]
        else:
            return _Resolved(list(loc), None, False)  # cannot follow further: report the full location
        index += 1
    return _Resolved(list(loc), current, False)


def _cause(error: Mapping[str, Any]) -> object:
    """The exception a model's own check raised, for a "value_error" (None otherwise)."""
    if error["type"] != "value_error" or "ctx" not in error:
        return None
    return error["ctx"]["error"]


def _blamed_field(error: Mapping[str, Any]) -> FieldError | None:
    """The FieldError a model's own check raised, if this error is one."""
    cause = _cause(error)
    return cause if isinstance(cause, FieldError) else None


def _problem(errors: list[dict[str, Any]], resolved: _Resolved) -> str:
    annotation, is_key, owner = resolved.annotation, resolved.is_key, resolved.owner
    kinds = {error["type"] for error in errors}
    if "missing" in kinds:
        return "missing required key"
    if "extra_forbidden" in kinds:
        return f"unknown key (valid keys: {', '.join(owner.model_fields)})" if owner else "unknown key"
    blamed = _blamed_field(errors[0])
    if blamed is not None:
        return blamed.detail
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


def problem_parts(model_type: type[BaseModel], exc: ValidationError) -> list[tuple[tuple[int | str, ...], str]]:
    """(path parts, problem) for each problem of a ValidationError, union branches merged."""
    groups: dict[tuple[tuple[int | str, ...], bool], list[dict[str, Any]]] = {}
    resolved: dict[tuple[tuple[int | str, ...], bool], _Resolved] = {}
    nested: list[tuple[tuple[int | str, ...], str]] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        cause = _cause(error)
        if isinstance(cause, ConfigProblems):
            nested += [(loc + parts, problem) for parts, problem in cause.problems]
            continue
        blamed = _blamed_field(error)
        # A model check's location is the model; a field check's already ends with the field.
        if blamed is not None and loc[-1:] != (blamed.key,):
            loc += (blamed.key,)
        found = _resolve(model_type, loc)
        key = (tuple(found.path), found.is_key)
        groups.setdefault(key, []).append(dict(error))
        resolved[key] = found
    return [(path, _problem(errors, resolved[(path, is_key)])) for (path, is_key), errors in groups.items()] + nested


def validation_problems(model_type: type[BaseModel], exc: ValidationError, where: str = "") -> list[tuple[str, str]]:
    """(path, problem) pairs for a pydantic ValidationError; paths joined with " > " under `where`."""
    return [
        (join_path(where, *(str(part) if isinstance(part, str) else part for part in path)), problem)
        for path, problem in problem_parts(model_type, exc)
    ]


def describe_validation_error(model_type: type[BaseModel], exc: ValidationError) -> str:
    """Config-file wording: "ppo.learning_rate: problem" per problem, joined by "; ".

    A problem of the whole model (a cross-field check that blames no field)
    has no path and is shown alone.
    """
    return str(ConfigProblems(problem_parts(model_type, exc)))
