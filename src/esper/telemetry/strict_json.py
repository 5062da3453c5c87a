"""Strict JSON for what a run writes: no bare NaN or Infinity, ever.

`json.dumps` writes a non-finite float as the bare tokens `NaN`, `Infinity`
and `-Infinity`, which strict JSON parsers (browsers, jq, most languages)
reject. Esper writes them as the strings "NaN", "Infinity" and "-Infinity"
instead, the convention of the protobuf JSON mapping: a float field holds a
number or one of those three strings. Nothing is lost (NaN and the two
infinities stay distinct) and a reader that knows the field is a float turns
the string back into the float; `JsonFloat` does that for the event models.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import BeforeValidator

NAN = "NaN"
POSITIVE_INFINITY = "Infinity"
NEGATIVE_INFINITY = "-Infinity"

_FROM_JSON: dict[str, float] = {NAN: math.nan, POSITIVE_INFINITY: math.inf, NEGATIVE_INFINITY: -math.inf}


def nonfinite_name(value: float) -> str:
    """The string a non-finite float is written as."""
    if math.isnan(value):
        return NAN
    if math.isinf(value):
        return POSITIVE_INFINITY if value > 0 else NEGATIVE_INFINITY
    raise ValueError(f"nonfinite_name: {value!r} is finite")


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (in nested dicts, lists and tuples) replaced by its string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else nonfinite_name(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """`json.dumps` that writes non-finite floats as strings and refuses anything else non-standard."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


def float_from_json(value: object) -> object:
    """A number as written by `dumps`: one of the three strings becomes its float; anything else is returned as is.

    Only the three exact spellings: any other string stays a string (and fails a float field's validation).
    """
    if isinstance(value, str) and value in _FROM_JSON:
        return _FROM_JSON[value]
    return value


# A float field of a persisted model: reads a number or "NaN" / "Infinity" / "-Infinity".
JsonFloat = Annotated[float, BeforeValidator(float_from_json)]
