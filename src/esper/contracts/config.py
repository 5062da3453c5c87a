"""Base class of every component config: frozen, strict, unknown keys rejected."""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum
from typing import Any

from annotated_types import GroupedMetadata
from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator

# Upper bounds of host sizes: far beyond any model this framework trains. A config (or checkpoint)
# claiming more is a typo or damage, and building it would exhaust memory or time before failing.
MAX_DIM = 2**20
MAX_LAYERS = 1024


class StrictConfig(BaseModel):
    """A small, validated, immutable config for one component.

    Unknown keys raise, and values are not coerced between types (an int is
    accepted where a float is expected; a string never is).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)


class _Metadata(GroupedMetadata):
    # Several pydantic annotations that pydantic unpacks as if written one after another.
    def __init__(self, *items: Any) -> None:
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)


def int_enum(enum_type: type[IntEnum]) -> GroupedMetadata:
    """Pydantic metadata for an IntEnum persisted as a plain int: `Annotated[Stage, int_enum(Stage)]`.

    Written as a static `Annotated` alias so a type checker sees the enum type itself.
    Accepts an enum member or a plain int that is one of its values (not a
    bool, str or float), and serialises to a plain int so the result loads
    under `torch.load(weights_only=True)`.
    """

    def check(value: object) -> IntEnum:
        if isinstance(value, enum_type):
            return value
        if type(value) is not int:
            raise ValueError(f"expected int ({enum_type.__name__} value), got {type(value).__name__}")
        try:
            return enum_type(value)
        except ValueError:
            valid = ", ".join(f"{m.value} ({m.name})" for m in enum_type)
            raise ValueError(f"expected one of {valid}, got {value}") from None

    return _Metadata(PlainValidator(check), PlainSerializer(int, return_type=int))
