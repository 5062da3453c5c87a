"""Host kinds by name, and building a host from its kind and a primitive config.

A checkpoint stores `host.kind` and `host.config()`; `build_host` turns them
back into the same architecture. Validation errors are rewritten so each one
names the exact config key.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import ValidationError
from torch import nn

from esper.contracts.config import StrictConfig


class HostConfigError(ValueError):
    """A cross-field config check that failed; `key` is the field to fix."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.detail = message


_HOST_KINDS: dict[str, type[nn.Module]] = {}
# Read-only view; add kinds with `register_host`.
HOST_KINDS: Mapping[str, type[nn.Module]] = MappingProxyType(_HOST_KINDS)

HostT = TypeVar("HostT", bound=type[nn.Module])


def register_host(kind: str) -> Callable[[HostT], HostT]:
    """Class decorator: register a host class under `kind` and set its `kind` attribute.

    The class must be an `nn.Module` with a `config_class` (a StrictConfig
    subclass) and take an instance of it as its only constructor argument.
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"register_host: kind must be a non-empty string, got {kind!r}")

    def decorate(cls: HostT) -> HostT:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"register_host({kind!r}): expected an nn.Module subclass, got {cls!r}")
        if not hasattr(cls, "config_class"):
            raise ValueError(f"register_host({kind!r}): {cls.__name__} has no config_class attribute")
        config_class = cls.config_class
        if not (isinstance(config_class, type) and issubclass(config_class, StrictConfig)):
            raise ValueError(
                f"register_host({kind!r}): {cls.__name__}.config_class must be a StrictConfig subclass, "
                f"got {config_class!r}"
            )
        if kind in _HOST_KINDS:
            raise ValueError(f"register_host: kind {kind!r} is already registered to {_HOST_KINDS[kind].__name__}")
        cls.kind = kind  # type: ignore[attr-defined]
        _HOST_KINDS[kind] = cls
        return cls

    return decorate


def build_host(kind: str, config: dict[str, Any]) -> nn.Module:
    """Build the host registered as `kind` from a primitive config dict."""
    if kind not in _HOST_KINDS:
        raise ValueError(f"unknown host kind {kind!r}; available kinds: {', '.join(sorted(_HOST_KINDS))}")
    if not isinstance(config, dict):
        raise ValueError(f"{kind} host config: expected a dict, got {type(config).__name__}")
    cls = _HOST_KINDS[kind]
    config_class: type[StrictConfig] = cls.config_class  # type: ignore[attr-defined]
    try:
        parsed = config_class.model_validate(config)
    except ValidationError as exc:
        raise ValueError(describe_config_error(f"{kind} host config", config_class, exc)) from None
    return cls(parsed)


def describe_config_error(prefix: str, model: type[StrictConfig], exc: ValidationError) -> str:
    """One line per problem, each naming its key: "<prefix> 'widths': expected list of int, got str"."""
    return "; ".join(_describe_one(prefix, model, error) for error in exc.errors())


def _describe_one(prefix: str, model: type[StrictConfig], error: Any) -> str:
    loc: tuple[str | int, ...] = error["loc"]
    kind: str = error["type"]
    if kind == "value_error" and isinstance(error["ctx"]["error"], HostConfigError):
        failed = error["ctx"]["error"]
        return f"{prefix} '{failed.key}': {failed.detail}"
    key = _format_loc(loc)
    if kind == "extra_forbidden":
        return f"{prefix} '{key}': unknown key; valid keys: {', '.join(model.model_fields)}"
    if kind == "missing":
        return f"{prefix} '{key}': required key is missing"
    if kind.endswith("_type") or kind == "literal_error":
        expected = _describe_type(_annotation_at(model, loc))
        found = error["input"]
        return f"{prefix} '{key}': expected {expected}, got {type(found).__name__} ({found!r})"
    # Range and other value checks: pydantic's own wording already says what was expected.
    where = f" '{key}'" if key else ""
    return f"{prefix}{where}: {error['msg']}, got {error['input']!r}"


def _format_loc(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _annotation_at(model: type[StrictConfig], loc: tuple[str | int, ...]) -> Any:
    """The declared type at `loc` (field name, then list indices into it)."""
    annotation: Any = model.model_fields[str(loc[0])].annotation
    for part in loc[1:]:
        args = typing.get_args(annotation)
        if isinstance(part, int) and typing.get_origin(annotation) is list and args:
            annotation = args[0]
    return annotation


def _describe_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _describe_type(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(value) for value in args)
    if origin is list:
        return f"list of {_describe_type(args[0])}" if args else "list"
    if origin is dict:
        return f"dict of {_describe_type(args[0])} to {_describe_type(args[1])}" if args else "dict"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_type(arg) for arg in args)
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))
