"""`esper.attach(model, slots=..., example_input=...)`: turn an existing nn.Module into a growing one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from esper.blueprints import BlueprintRegistry
from esper.contracts.slot_ids import format_slot_id
from esper.model.attach_config import AttachConfig
from esper.model.attached import AttachedModel
from esper.model.probe import probe_slots
from esper.seeds.gates import GateConfig


def slot_mapping(slots: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """Slot id -> submodule name. A list gets ids r0c0, r0c1, ... in its order."""
    if isinstance(slots, str):
        raise ValueError(f"slots: expected a list of submodule names or a mapping, got the string {slots!r}")
    if isinstance(slots, Mapping):
        mapping = dict(slots)
    elif isinstance(slots, Sequence):
        mapping = {format_slot_id(0, i): name for i, name in enumerate(slots)}
    else:
        raise ValueError(f"slots: expected a list of submodule names or a mapping, got {type(slots).__name__}")
    if not mapping:
        raise ValueError("slots: name at least one submodule")
    for slot_id, name in mapping.items():
        if not isinstance(name, str):
            raise ValueError(f"slots[{slot_id!r}]: expected a submodule name, got {type(name).__name__}")
    return mapping


def attach(
    model: nn.Module,
    slots: Sequence[str] | Mapping[str, str],
    *,
    example_input: Any = None,
    config: AttachConfig | None = None,
    topology: Mapping[str, str] | None = None,
    n_heads: Mapping[str, int] | None = None,
    gates: GateConfig | None = None,
    registry: BlueprintRegistry | None = None,
) -> AttachedModel:
    """Put a seed slot after each named submodule of `model` (in place: same parameters, no copies).

    `slots`: submodule names (slot ids r0c0, r0c1, ... in that order) or a
    mapping slot id -> submodule name. `example_input` (a tensor, a tuple of
    positional args or a dict of keyword args) runs one forward pass that
    infers each slot's topology and width; `topology` / `n_heads` (by slot id)
    override the inference. `config` instead of `example_input`: reuse a known
    layout (e.g. the one a checkpoint stored) without probing.
    """
    mapping = slot_mapping(slots)
    if config is None:
        if example_input is None:
            raise ValueError("attach: pass example_input (one batch of the model's input) so slot shapes can be probed")
        config = AttachConfig(slots=probe_slots(model, mapping, example_input, topology=topology, n_heads=n_heads))
    else:
        if example_input is not None or topology or n_heads:
            raise ValueError("attach: give either config or example_input (with topology / n_heads), not both")
        placed = {sid: spec.module for sid, spec in config.slots.items()}
        if placed != mapping:
            raise ValueError(f"attach: config places slots at {placed}, but slots asks for {mapping}")
    return AttachedModel(model, config, gates=gates, registry=registry)
