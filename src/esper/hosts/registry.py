"""Host kinds by name, and building a host from its kind and a primitive config.

A checkpoint stores `host.kind` and `host.config()`; `build_host` turns them
back into the same architecture. Validation errors name the exact config key
(through the shared formatter, esper.contracts.validation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import ValidationError
from torch import nn

from esper.contracts.config import StrictConfig
from esper.contracts.validation import ConfigProblems, FieldError, problem_parts


class HostConfigError(FieldError):
    """A host config's cross-field check that failed; reported at `key`, the field to fix."""


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
        cls.kind = kind  # type: ignore[attr-defined]  # the registered class gets its kind here
        _HOST_KINDS[kind] = cls
        return cls

    return decorate


def build_host(kind: str, config: dict[str, Any]) -> nn.Module:
    """Build the host registered as `kind` from a primitive config dict.

    A config that fails validation raises ConfigProblems (a ValueError) with each problem at its key.
    """
    if kind not in _HOST_KINDS:
        raise ValueError(f"unknown host kind {kind!r}; available kinds: {', '.join(sorted(_HOST_KINDS))}")
    if not isinstance(config, dict):
        raise ValueError(f"{kind} host config: expected a dict, got {type(config).__name__}")
    cls = _HOST_KINDS[kind]
    config_class: type[StrictConfig] = cls.config_class  # type: ignore[attr-defined]  # register_host checked it
    try:
        parsed = config_class.model_validate(config)
    except ValidationError as exc:
        raise ConfigProblems(problem_parts(config_class, exc), subject=f"{kind} host config") from None
    return cls(parsed)
