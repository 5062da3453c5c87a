"""One slot's lifecycle in a checkpoint: its strict schema, writing and restoring.

The slot itself turns its lifecycle into primitives and back
(`SeedSlot.lifecycle_state` / `restore_lifecycle`); this module owns what a
checkpoint may contain for a slot. Every key is required here, even where the
in-memory models have defaults (a checkpoint that lost a key is damaged, not
"default"), so a missing key, an unknown key or a wrong type raises one
CheckpointError naming the exact path (seed 004, SLOT-1/SLOT-2).
"""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from esper.checkpoints.errors import CheckpointError, join_path
from esper.checkpoints.strict import validate
from esper.seeds.alpha_controller import AlphaControllerState
from esper.seeds.slot import LifecycleError, SeedSlot
from esper.seeds.state import SeedState

__all__ = ["SlotLifecycle", "StoredSeedState", "all_required", "restore_slot", "slot_payload"]


@cache
def all_required(model: type[BaseModel]) -> type[BaseModel]:
    """A subclass of `model` in which every field (recursively) is required.

    Field types, constraints and validators are kept; only defaults go, so
    reading a checkpoint never fills a missing key in silently.
    """
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = _required_annotation(info.annotation)
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        fields[name] = (annotation, Field())
    derived = create_model(model.__name__, __base__=model, **fields)
    derived.__doc__ = f"{model.__name__} as stored in a checkpoint: every key required."
    return derived


def _required_annotation(annotation: Any) -> Any:
    """Rewrite nested pydantic models inside an annotation to their all-required form."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return all_required(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return list[_required_annotation(args[0])]
    if origin is dict:
        return dict[args[0], _required_annotation(args[1])]
    if origin in (Union, types.UnionType):
        return Union[tuple(_required_annotation(arg) for arg in args)]  # noqa: UP007 (built at run time)
    return annotation


# The stored forms of the slot's pydantic state models (every key required).
StoredSeedState = all_required(SeedState)


class SlotLifecycle(BaseModel):
    """What a checkpoint stores for one slot (weights live in the model's state_dict)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tick: Annotated[int, Field(ge=0)]
    pending_prune_reason: str | None
    alpha: AlphaControllerState
    seed_state: StoredSeedState | None  # type: ignore[valid-type]


def slot_payload(slot: SeedSlot) -> dict[str, Any]:
    """The slot's lifecycle as primitives, checked against the schema it will be read with."""
    payload = slot.lifecycle_state()
    validate(SlotLifecycle, payload, f"seed_slots.{slot.slot_id}")
    return payload


def restore_slot(slot: SeedSlot, data: object, where: str) -> None:
    """Validate `data` strictly, then rebuild the slot's lifecycle from it.

    `where` is the slot's path in the checkpoint (e.g. "seed_slots.r0c1");
    every error names a path below it.
    """
    validated = validate(SlotLifecycle, data, where)
    state = validated.seed_state
    if state is not None:
        topology = slot.shape.topology
        if state.blueprint not in slot.registry.names(topology):
            raise CheckpointError.at(
                join_path(where, "seed_state", "blueprint"),
                f"unknown {topology} blueprint {state.blueprint!r}; "
                f"known: {', '.join(slot.registry.names(topology))}",
            )
    assert isinstance(data, dict)  # validate() accepted it as the model's mapping
    try:
        slot.restore_lifecycle(data)
    except LifecycleError as error:
        raise CheckpointError.at(where, str(error)) from None
