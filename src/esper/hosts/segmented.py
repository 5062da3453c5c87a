"""SegmentedHost: the parts every one of our hosts shares.

A subclass sets `self.cfg` (its StrictConfig), `self.segments` and
`self._slot_shapes` (slot id -> SlotShape, row-major), and defines `stem`
and `head`; the bare forward, slot lookup and config come from here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

from esper.contracts.config import StrictConfig
from esper.contracts.shapes import SlotShape


class SegmentedHost(nn.Module, ABC):
    cfg: StrictConfig
    segments: nn.ModuleList
    _slot_shapes: dict[str, SlotShape]

    @abstractmethod
    def stem(self, x: Tensor) -> Tensor:
        """Raw input -> features entering segment 0."""

    @abstractmethod
    def head(self, h: Tensor) -> Tensor:
        """Features leaving the last slot -> output."""

    def forward(self, x: Tensor) -> Tensor:
        """The bare host: stem, every segment, head (no slots)."""
        h = self.stem(x)
        for segment in self.segments:
            h = segment(h)
        return self.head(h)

    def slot_ids(self) -> list[str]:
        return list(self._slot_shapes)

    def slot_shape(self, slot_id: str) -> SlotShape:
        if not isinstance(slot_id, str) or slot_id not in self._slot_shapes:
            raise ValueError(
                f"{type(self).__name__}: unknown slot id {slot_id!r}; valid ids: {', '.join(self._slot_shapes)}"
            )
        return self._slot_shapes[slot_id]

    def config(self) -> dict[str, Any]:
        return self.cfg.model_dump()
