"""Model checkpoints: `save_model(model, path)` and `load_model(path)`.

A model checkpoint is self-describing: the host's kind and config, the
enabled slots, the gate config, each slot's lifecycle (primitives only) and
the state_dict. Loading rebuilds the host, recreates every seed from its
blueprint id and then loads the weights with `strict=True`; no user code has
to re-germinate anything first. Reading is strict: one CheckpointError names
every missing key, unknown key or wrong type by its path.

Loading is fast: the modules are built without initialisation (on the meta
device, see esper.checkpoints.skeleton) and take the tensors read from the
file as their parameters, which are memory-mapped copy-on-write (see
esper.checkpoints.io): nothing is initialised or copied that the
checkpoint then overwrites.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict

from esper.blueprints import BlueprintRegistry
from esper.checkpoints.attached_io import attached_from_payload, attached_payload, is_attached_payload
from esper.checkpoints.errors import CheckpointError, join_path
from esper.checkpoints.io import load_checkpoint, peek_format, save_checkpoint, split_header
from esper.checkpoints.skeleton import alias_groups, assign_weights, build_skeleton, check_ties
from esper.checkpoints.slot_state import all_required, restore_slot, slot_payload
from esper.checkpoints.strict import validate
from esper.contracts.schema import (
    MODEL_CHECKPOINT_FORMAT,
    MODEL_CHECKPOINT_VERSION,
    RUN_CHECKPOINT_FORMAT,
)
from esper.contracts.validation import ConfigProblems
from esper.hosts import HOST_KINDS, build_host
from esper.model import MorphogeneticModel
from esper.model.attached import AttachedModel
from esper.seeds.gates import GateConfig

__all__ = ["ModelSection", "load_model", "model_from_payload", "model_payload", "save_model"]

# The key under which a run checkpoint embeds the model layout.
RUN_MODEL_KEY = "model"

if TYPE_CHECKING:  # built at run time, so a type checker sees the class it derives from
    StoredGateConfig = GateConfig
else:
    StoredGateConfig = all_required(GateConfig)


class HostSection(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: str
    # Checked by the host's own config class when the host is rebuilt.
    config: dict[str, Any]


class ModelSection(BaseModel):
    """The model layout (in a model checkpoint, or under "model" in a run checkpoint)."""

    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)

    host: HostSection
    slots: list[str]
    gates: StoredGateConfig
    # Per slot; each entry is validated against SlotLifecycle with its own path.
    seed_slots: dict[str, Any]
    state_dict: dict[str, torch.Tensor]


def model_payload(model: MorphogeneticModel) -> dict[str, Any]:
    """The model as primitives and tensors, ready for `save_checkpoint`.

    The tensors are the model's own (no copy): write the payload before
    training on, or clone them.
    """
    if not isinstance(model, MorphogeneticModel):
        raise TypeError(f"model must be a MorphogeneticModel, got {type(model).__name__}")
    if isinstance(model, AttachedModel):
        return attached_payload(model)
    host = model.host
    kind = host.kind
    if kind not in HOST_KINDS or HOST_KINDS[kind] is not type(host):
        raise CheckpointError.at(
            "host > kind",
            f"host class {type(host).__name__} is not registered as kind {kind!r}, so loading could not "
            f"rebuild it; register it with esper.hosts.register_host",
        )
    return {
        "host": {"kind": kind, "config": host.config()},
        "slots": model.slot_ids(),
        "gates": model.gate_config.model_dump(),
        "seed_slots": {slot.slot_id: slot_payload(slot) for slot in model.slots()},
        "state_dict": dict(model.state_dict()),
    }


def save_model(model: MorphogeneticModel, path: str | os.PathLike[str]) -> None:
    """Write a model checkpoint atomically (loads with torch.load(weights_only=True))."""
    save_checkpoint(
        model_payload(model), path, format=MODEL_CHECKPOINT_FORMAT, schema_version=MODEL_CHECKPOINT_VERSION
    )


def load_model(
    path: str | os.PathLike[str],
    *,
    registry: BlueprintRegistry | None = None,
    base: torch.nn.Module | None = None,
) -> MorphogeneticModel:
    """Rebuild a MorphogeneticModel from a model checkpoint or from a run checkpoint's model.

    `registry` must know every blueprint the checkpoint uses (default: the
    process's default registry). `base`: for a checkpoint of an attached model
    (`esper.attach`), a freshly built copy of the user's module to attach the
    stored slots to (only then). Any problem raises one CheckpointError.
    """
    try:
        data = load_checkpoint(path, format=MODEL_CHECKPOINT_FORMAT)
        where = ""
    except CheckpointError:
        # A run checkpoint carries the same layout under "model"; anything else keeps the first error.
        if peek_format(path) != RUN_CHECKPOINT_FORMAT:
            raise
        data = load_checkpoint(path, format=RUN_CHECKPOINT_FORMAT)
        if RUN_MODEL_KEY not in data:
            raise CheckpointError.at(RUN_MODEL_KEY, "missing required key", file=path) from None
        data, where = data[RUN_MODEL_KEY], RUN_MODEL_KEY
    else:
        data = split_header(data)[1]

    try:
        if is_attached_payload(data):
            if base is None:
                raise CheckpointError.at(
                    join_path(where, "host", "kind"),
                    "this is a model attached to your own module (esper.attach): build that module again and "
                    "pass it as load_model(path, base=module)",
                )
            section = validate(ModelSection, data, where)
            return attached_from_payload(section, data, where, base, registry)
        if base is not None:
            raise CheckpointError.at(
                join_path(where, "host", "kind"),
                "base= is only for checkpoints of attached models; this one rebuilds its own host",
            )
        # The payload was just read from the file and is ours alone: the model may keep its tensors.
        return model_from_payload(data, where, registry=registry, share_tensors=True)
    except CheckpointError as error:
        raise error.with_file(path) from None


def model_from_payload(
    payload: object,
    where: str = "",
    *,
    registry: BlueprintRegistry | None = None,
    share_tensors: bool = False,
) -> MorphogeneticModel:
    """Rebuild the model from `model_payload` output; `where` prefixes every error path.

    Building draws nothing from the global RNG (it runs under a forked RNG
    state), so loading a model does not change what a training run does next.
    `share_tensors=True` lets the model use the payload's tensors as its
    parameters without copying them: only for a payload nobody else holds
    (one just read from a file). Otherwise the model gets copies.
    """
    section = validate(ModelSection, payload, where)
    assert isinstance(payload, dict)  # validate() accepted it as a mapping

    def build() -> MorphogeneticModel:
        model = _build(section, where, registry)
        for slot_id in section.slots:
            restore_slot(
                model.slot(slot_id), payload["seed_slots"][slot_id], join_path(where, f"seed_slots.{slot_id}")
            )
        return model

    # Neither way of building moves the caller's generators (build_skeleton: a skeleton draws
    # nothing, a model built for real draws from a throwaway generator).
    model, skeleton = build_skeleton(build)
    state_dict = section.state_dict
    if skeleton and not share_tensors:
        state_dict = {key: tensor.clone() for key, tensor in state_dict.items()}
    _load_weights(model, state_dict, join_path(where, "state_dict"), assign=skeleton)
    return model


def _build(section: ModelSection, where: str, registry: BlueprintRegistry | None) -> MorphogeneticModel:
    kind = section.host.kind
    if kind not in HOST_KINDS:
        raise CheckpointError.at(
            join_path(where, "host", "kind"),
            f"unknown host kind {kind!r}; known kinds: {', '.join(sorted(HOST_KINDS))}",
        )
    config_path = join_path(where, "host", "config")
    # Every key of the host's config is stored: a missing one is damage, not its default.
    # Ignored below: register_host requires config_class.
    validate(all_required(HOST_KINDS[kind].config_class), section.host.config, config_path)  # type: ignore[attr-defined]
    try:
        host = build_host(kind, section.host.config)
    except ConfigProblems as error:
        problems = [(join_path(config_path, *parts), problem) for parts, problem in error.problems]
        raise CheckpointError.many(problems) from None
    except ValueError as error:
        raise CheckpointError.at(config_path, str(error)) from None
    gates = GateConfig.model_validate(section.gates.model_dump())
    try:
        model = MorphogeneticModel(host, slots=section.slots, gates=gates, registry=registry)
    except ValueError as error:
        # The slots a host has come from its config: name it too.
        host_config = join_path(where, "host", "config")
        raise CheckpointError.at(join_path(where, "slots"), f"{error} (the host of {host_config})") from None
    expected = set(section.slots)
    stored = set(section.seed_slots)
    slots_path = join_path(where, "slots")
    problems = [
        (join_path(where, f"seed_slots.{sid}"), "missing required key")
        for sid in sorted(expected - stored)
    ]
    problems += [
        (join_path(where, f"seed_slots.{sid}"), f"unknown key (not enabled in {slots_path} {section.slots})")
        for sid in sorted(stored - expected)
    ]
    if problems:
        raise CheckpointError.many(problems)
    return model


def _load_weights(
    model: MorphogeneticModel, state_dict: dict[str, torch.Tensor], where: str, *, assign: bool
) -> None:
    """Name every missing, unexpected or mismatched tensor, then load with strict=True.

    `assign`: `model` is a meta-device skeleton that takes the tensors
    themselves (see esper.checkpoints.skeleton); otherwise they are copied in.
    """
    # keep_vars: the Parameters themselves, so tied names show up as one object.
    expected = model.state_dict(keep_vars=True)
    problems = [(join_path(where, key), "missing required key") for key in expected if key not in state_dict]
    problems += [
        (join_path(where, key), "unknown key (the rebuilt model has no such tensor)")
        for key in state_dict
        if key not in expected
    ]
    for key, tensor in state_dict.items():
        if key in expected:
            want = expected[key]
            if tensor.shape != want.shape or tensor.dtype != want.dtype:
                problems.append(
                    (
                        join_path(where, key),
                        f"expected tensor of shape {tuple(want.shape)} and dtype {want.dtype}, "
                        f"got shape {tuple(tensor.shape)} and dtype {tensor.dtype}",
                    )
                )
    if problems:
        raise CheckpointError.many(problems)
    groups = alias_groups(expected)
    check_ties(groups, state_dict, where)
    if assign:
        assign_weights(model, state_dict, groups)
    else:
        model.load_state_dict(state_dict, strict=True)
