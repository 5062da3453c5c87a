"""One slot's lifecycle in a checkpoint: its strict schema, writing and restoring.

The slot itself turns its lifecycle into primitives and back
(`SeedSlot.lifecycle_state` / `restore_lifecycle`); this module owns what a
checkpoint may contain for a slot. Every key is required here, even where the
in-memory models have defaults (a checkpoint that lost a key is damaged, not
"default"), so a missing key, an unknown key or a wrong type raises one
CheckpointError naming the exact path: a default would hide a damaged file.
"""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from esper.checkpoints.errors import CheckpointError, join_path
from esper.checkpoints.strict import validate
from esper.contracts.alpha import AlphaMode
from esper.contracts.constants import EMBARGO_EPOCHS
from esper.contracts.stages import SeedStage, is_failure, is_valid_transition
from esper.seeds.alpha_controller import AlphaController, AlphaControllerState
from esper.seeds.slot import LifecycleError, SeedSlot
from esper.seeds.state import SeedRecord

__all__ = ["SlotLifecycle", "StoredSeedState", "all_required", "lifecycle_problems", "restore_slot", "slot_payload"]


ModelT = TypeVar("ModelT", bound=BaseModel)


def all_required(model: type[ModelT]) -> type[ModelT]:
    """A subclass of `model` in which every field (recursively) is required.

    Field types, constraints and validators are kept; only defaults go, so
    reading a checkpoint never fills a missing key in silently. The one
    exception is a field whose dump leaves it out at its default (`exclude_if`):
    its absence is how it is written, so it reads back as that default.
    """
    return _all_required(model)  # type: ignore[return-value]  # a subclass of `model`


@cache
def _all_required(model: type[BaseModel]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = _required_annotation(info.annotation)
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        fields[name] = (annotation, Field() if info.exclude_if is None else Field(default=info.default))
    derived = create_model(model.__name__, __base__=model, **fields)
    derived.__doc__ = f"{model.__name__} as stored in a checkpoint: every key required."
    return derived


def _required_annotation(annotation: Any) -> Any:
    """Rewrite nested pydantic models inside an annotation to their all-required form."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return all_required(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return types.GenericAlias(list, _required_annotation(args[0]))
    if origin is dict:
        return types.GenericAlias(dict, (args[0], _required_annotation(args[1])))
    if origin in (Union, types.UnionType):
        return Union[tuple(_required_annotation(arg) for arg in args)]  # noqa: UP007 (built at run time)
    return annotation


# The stored forms of the slot's pydantic state models (every key required).
if TYPE_CHECKING:  # built at run time, so a type checker sees the class it derives from
    StoredSeedState = SeedRecord
else:
    StoredSeedState = all_required(SeedRecord)


class SlotLifecycle(BaseModel):
    """What a checkpoint stores for one slot (weights live in the model's state_dict)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tick: Annotated[int, Field(ge=0)]
    pending_prune_reason: str | None
    alpha: AlphaControllerState
    seed_state: StoredSeedState | None


_FRESH_ALPHA = AlphaController().to_dict()
# Stages whose slot holds a seed module (and so may have alpha > 0).
_HOLDS_SEED = (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED)


def lifecycle_problems(lifecycle: SlotLifecycle, where: str) -> list[tuple[str, str]]:
    """States the slot's own operations can never produce, as (path, problem) pairs.

    Types and ranges are the schema's; these are the relations between fields
    that SeedSlot keeps: the stage history is a walk of valid transitions ending
    in the current stage, counters agree with the slot's tick, alpha agrees
    with the stage, and only a pruned seed has a prune reason.
    """
    alpha = lifecycle.alpha
    state = lifecycle.seed_state
    problems: list[tuple[str, str]] = []

    def at(*parts: str | int) -> str:
        return join_path(where, *parts)

    if state is None:
        if alpha.model_dump() != _FRESH_ALPHA:
            problems.append((at("alpha"), f"a slot without a seed holds a fresh controller {_FRESH_ALPHA}"))
        return problems
    stage, history, metrics = state.stage, state.history, state.metrics
    if stage in (SeedStage.UNKNOWN, SeedStage.DORMANT):
        return [(at("seed_state", "stage"), f"a seed cannot be in stage {stage.name} (DORMANT stores seed_state None)")]
    # History: germination first, then valid transitions, ticks never decreasing, ending in `stage`.
    if not history:
        return [(at("seed_state", "history"), "expected at least the germination record, got an empty list")]
    if history[0].stage != SeedStage.GERMINATED:
        problems.append((at("seed_state", "history", 0, "stage"), f"expected GERMINATED, got {history[0].stage.name}"))
    for index in range(1, len(history)):
        before, after = history[index - 1], history[index]
        if not is_valid_transition(before.stage, after.stage):
            problems.append(
                (
                    at("seed_state", "history", index, "stage"),
                    f"{before.stage.name} -> {after.stage.name} is not a valid transition",
                )
            )
        if after.tick < before.tick:
            problems.append(
                (
                    at("seed_state", "history", index, "tick"),
                    f"expected >= {before.tick} (the record before), got {after.tick}",
                )
            )
    if history[-1].stage != stage:
        problems.append(
            (
                at("seed_state", "stage"),
                f"expected {history[-1].stage.name} (the last history record), got {stage.name}",
            )
        )
    previous = history[-2].stage if len(history) > 1 else SeedStage.DORMANT
    if state.previous_stage != previous:
        problems.append(
            (
                at("seed_state", "previous_stage"),
                f"expected {previous.name} (from the history), got {state.previous_stage.name}",
            )
        )
    if history[-1].tick > lifecycle.tick:
        problems.append(
            (
                at("seed_state", "history", len(history) - 1, "tick"),
                f"expected <= the slot's tick {lifecycle.tick}, got {history[-1].tick}",
            )
        )
    # Counters: every step_epoch tick adds one epoch in the stage, and one in total while the seed lives.
    in_stage = lifecycle.tick - history[-1].tick
    if metrics.epochs_in_stage != in_stage:
        problems.append(
            (
                at("seed_state", "metrics", "epochs_in_stage"),
                f"expected {in_stage} (ticks since the stage began), got {metrics.epochs_in_stage}",
            )
        )
    pruned = next((record for record in history if record.stage == SeedStage.PRUNED), None)
    lived = (lifecycle.tick if pruned is None else pruned.tick) - history[0].tick
    if metrics.epochs_total != lived:
        problems.append(
            (
                at("seed_state", "metrics", "epochs_total"),
                f"expected {lived} (ticks the seed lived), got {metrics.epochs_total}",
            )
        )
    if stage == SeedStage.EMBARGOED and metrics.epochs_in_stage >= EMBARGO_EPOCHS:
        problems.append(
            (
                at("seed_state", "metrics", "epochs_in_stage"),
                f"an embargo ends after {EMBARGO_EPOCHS} epochs, got {metrics.epochs_in_stage}",
            )
        )
    if stage in (SeedStage.PRUNED, SeedStage.RESETTING) and metrics.epochs_in_stage != 0:
        problems.append(
            (
                at("seed_state", "metrics", "epochs_in_stage"),
                f"stage {stage.name} lasts less than one epoch, got {metrics.epochs_in_stage}",
            )
        )
    failed = is_failure(stage)
    if failed != (state.prune_reason is not None):
        wording = (
            "a pruned seed records why" if failed else f"only a pruned seed has a prune reason (stage {stage.name})"
        )
        problems.append((at("seed_state", "prune_reason"), f"{wording}, got {state.prune_reason!r}"))
    problems += _alpha_problems(lifecycle, where)
    return problems


def _alpha_problems(lifecycle: SlotLifecycle, where: str) -> list[tuple[str, str]]:
    """Alpha against the stage: no blend before BLENDING, at the target once there, ramping only while blending."""
    alpha, state, pending = lifecycle.alpha, lifecycle.seed_state, lifecycle.pending_prune_reason
    assert state is not None
    stage = state.stage
    path = join_path(where, "alpha")
    if stage not in _HOLDS_SEED or stage in (SeedStage.GERMINATED, SeedStage.TRAINING):
        if alpha.model_dump() != _FRESH_ALPHA:
            return [
                (
                    path,
                    f"stage {stage.name} holds a fresh controller {_FRESH_ALPHA} (alpha 0, HOLD), "
                    f"got {alpha.model_dump()}",
                )
            ]
        return []
    if pending is not None:
        return []  # a scheduled prune ramps down to 0 (restore_lifecycle checks its shape)
    if alpha.target != state.alpha_target:
        return [
            (join_path(path, "target"), f"expected the seed's alpha_target {state.alpha_target}, got {alpha.target}")
        ]
    if stage in (SeedStage.HOLDING, SeedStage.FOSSILIZED):
        if alpha.mode is not AlphaMode.HOLD:
            return [
                (join_path(path, "mode"), f"stage {stage.name} is not ramping: expected HOLD, got {alpha.mode.name}")
            ]
        if alpha.alpha != 1.0:
            # Gate G3 lets a seed into HOLDING only with its ramp finished at 1.0.
            return [(join_path(path, "alpha"), f"stage {stage.name} blends at full strength 1.0, got {alpha.alpha}")]
    return []


def slot_payload(slot: SeedSlot) -> dict[str, Any]:
    """The slot's lifecycle as primitives, checked against the schema (and invariants) it will be read with."""
    payload = slot.lifecycle_state()
    where = f"seed_slots.{slot.slot_id}"
    problems = lifecycle_problems(validate(SlotLifecycle, payload, where), where)
    if problems:
        raise CheckpointError.many(problems)
    return payload


def restore_slot(slot: SeedSlot, data: object, where: str) -> None:
    """Validate `data` strictly, then rebuild the slot's lifecycle from it.

    `where` is the slot's path in the checkpoint (e.g. "seed_slots.r0c1");
    every error names a path below it.
    """
    validated = validate(SlotLifecycle, data, where)
    problems = lifecycle_problems(validated, where)
    if problems:
        raise CheckpointError.many(problems)
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
