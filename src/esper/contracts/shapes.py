"""What a blueprint needs to know about the place it is grown into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Topology = Literal["cnn", "transformer"]
TOPOLOGIES: tuple[str, ...] = ("cnn", "transformer")


@dataclass(frozen=True)
class SlotShape:
    """Feature layout at a slot.

    cnn: tensors are (batch, width, *spatial) with `spatial_dims` in {1, 2}.
    transformer: tensors are (batch, seq, width); `n_heads` divides width.
    """

    topology: Topology
    width: int
    spatial_dims: int = 0
    n_heads: int = 0

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"SlotShape.topology: expected one of {TOPOLOGIES}, got {self.topology!r}")
        if not isinstance(self.width, int) or self.width <= 0:
            raise ValueError(f"SlotShape.width: expected a positive int, got {self.width!r}")
        if self.topology == "cnn" and self.spatial_dims not in (1, 2):
            raise ValueError(f"SlotShape.spatial_dims: expected 1 or 2 for cnn, got {self.spatial_dims!r}")
        if self.topology == "transformer" and (self.n_heads <= 0 or self.width % self.n_heads):
            raise ValueError(
                f"SlotShape.n_heads: expected a positive divisor of width {self.width}, got {self.n_heads!r}"
            )

    def to_dict(self) -> dict[str, object]:
        return {
            "topology": self.topology,
            "width": self.width,
            "spatial_dims": self.spatial_dims,
            "n_heads": self.n_heads,
        }
