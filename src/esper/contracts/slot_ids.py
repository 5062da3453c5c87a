"""Slot ids `r{row}c{col}`: parsing, validation and the stable row-major order."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

_SLOT_ID = re.compile(r"r(0|[1-9][0-9]*)c(0|[1-9][0-9]*)")


class SlotId(NamedTuple):
    row: int
    col: int

    def __str__(self) -> str:
        return format_slot_id(self.row, self.col)


def format_slot_id(row: int, col: int) -> str:
    if row < 0 or col < 0:
        raise ValueError(f"slot id: row and col must be >= 0, got row={row}, col={col}")
    return f"r{row}c{col}"


def parse_slot_id(text: str) -> SlotId:
    """Parse 'r0c1' into SlotId(0, 1); anything else raises ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"slot id: expected a string like 'r0c1', got {type(text).__name__}")
    match = _SLOT_ID.fullmatch(text)
    if match is None:
        raise ValueError(f"slot id: expected the form 'r<row>c<col>' (e.g. 'r0c1'), got {text!r}")
    return SlotId(int(match.group(1)), int(match.group(2)))


def sort_slot_ids(ids: Iterable[str]) -> list[str]:
    """Row-major order; this order fixes the action index of each slot."""
    return sorted(ids, key=parse_slot_id)
