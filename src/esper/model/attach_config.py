"""AttachConfig: where the slots of an attached model sit and what they see.

Plain primitives (it travels in checkpoints read with
`torch.load(weights_only=True)`), filled in by the shape probe at attach time
and reused as it is when a checkpoint is loaded onto a freshly built base.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from esper.contracts.config import StrictConfig
from esper.contracts.shapes import SlotShape
from esper.contracts.slot_ids import parse_slot_id


class AttachedSlot(StrictConfig):
    """One slot: after submodule `module`, on the tensor it outputs (or element `output_index` of a tuple)."""

    module: str = Field(min_length=1)
    # None: the submodule returns the tensor itself; an int: position of the tensor in a tuple/list output.
    output_index: int | None = Field(default=None, ge=0)
    topology: Literal["cnn", "transformer"]
    width: int = Field(ge=1)
    spatial_dims: int = Field(default=0, ge=0, le=2)
    n_heads: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _valid_shape(self) -> AttachedSlot:
        self.shape()  # SlotShape names the field and the value it refuses
        return self

    def shape(self) -> SlotShape:
        return SlotShape(self.topology, self.width, spatial_dims=self.spatial_dims, n_heads=self.n_heads)


class AttachConfig(StrictConfig):
    """Slot id (`r<row>c<col>`) -> where that slot sits."""

    slots: dict[str, AttachedSlot] = Field(min_length=1)

    @model_validator(mode="after")
    def _valid_slots(self) -> AttachConfig:
        for slot_id in self.slots:
            parse_slot_id(slot_id)
        modules = [slot.module for slot in self.slots.values()]
        repeated = sorted({m for m in modules if modules.count(m) > 1})
        if repeated:
            raise ValueError(f"slots: each submodule takes one slot, got several on {repeated}")
        return self
