"""Model checkpoints of attached models (seed slots on a user's own module).

The user's module cannot be rebuilt from a description, so the checkpoint
stores what can be: host kind "attached" with the AttachConfig (where each
slot sits and what it sees), the gate config, each slot's lifecycle and the
weights (the user's module under "host.", the seeds under "seed_slots.").
Loading needs a freshly built copy of the module (`load_model(path,
base=module)`): the slots are attached to it by the stored layout (no probe),
every seed is recreated from its blueprint, and the weights are loaded
strictly, every missing, unknown or mismatched tensor named by its path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from esper.blueprints import BlueprintRegistry
from esper.checkpoints.errors import CheckpointError, join_path
from esper.checkpoints.slot_state import restore_slot, slot_payload
from esper.checkpoints.strict import validate
from esper.model.attach_config import AttachConfig
from esper.model.attached import AttachedModel
from esper.random_stream import discarded_draws
from esper.seeds.gates import GateConfig

__all__ = ["ATTACHED_KIND", "attached_from_payload", "attached_payload", "is_attached_payload"]

# The host kind recorded for an attached model; never a registered host (it cannot be rebuilt alone).
ATTACHED_KIND = "attached"
_EXTRA_STATE_SUFFIX = "_extra_state"


def _tensor_state(model: nn.Module, *, keep_vars: bool = False) -> dict[str, Any]:
    """The state_dict without nn.Module extra state (the lifecycles are stored in their own section)."""
    return {
        key: value
        for key, value in model.state_dict(keep_vars=keep_vars).items()
        if key.rsplit(".", 1)[-1] != _EXTRA_STATE_SUFFIX
    }


def attached_payload(model: AttachedModel) -> dict[str, Any]:
    """The same sections as a built-in model's payload, with the attach layout as the host config."""
    return {
        "host": {"kind": ATTACHED_KIND, "config": model.attach_config.model_dump()},
        "slots": model.slot_ids(),
        "gates": model.gate_config.model_dump(),
        "seed_slots": {slot.slot_id: slot_payload(slot) for slot in model.slots()},
        "state_dict": _tensor_state(model),
    }


def is_attached_payload(payload: object) -> bool:
    """Whether a (not yet validated) model payload records an attached model."""
    if not isinstance(payload, dict) or "host" not in payload or not isinstance(payload["host"], dict):
        return False
    host = payload["host"]
    return "kind" in host and host["kind"] == ATTACHED_KIND


def attached_from_payload(
    section: Any, payload: dict[str, Any], where: str, base: nn.Module, registry: BlueprintRegistry | None
) -> AttachedModel:
    """Attach the stored layout to `base`, restore every slot and load the weights strictly.

    `section` is the payload already validated as a ModelSection.
    """
    config_path = join_path(where, "host", "config")
    config = validate(AttachConfig, section.host.config, config_path)
    if not isinstance(base, nn.Module):
        raise CheckpointError.at(config_path, f"base: expected an nn.Module, got {type(base).__name__}")
    if sorted(section.slots) != sorted(config.slots):
        raise CheckpointError.at(
            join_path(where, "slots"), f"expected the attached slots {sorted(config.slots)}, got {section.slots}"
        )
    stored = set(section.seed_slots)
    problems = [
        (join_path(where, f"seed_slots.{sid}"), "missing required key") for sid in sorted(set(config.slots) - stored)
    ]
    problems += [
        (join_path(where, f"seed_slots.{sid}"), f"unknown key (not one of the attached slots {sorted(config.slots)})")
        for sid in sorted(stored - set(config.slots))
    ]
    if problems:
        raise CheckpointError.many(problems)
    gates = GateConfig.model_validate(section.gates.model_dump())
    try:
        model = AttachedModel(base, config, gates=gates, registry=registry)
    except ValueError as error:
        raise CheckpointError.at(config_path, f"cannot attach to the given base: {error}") from None
    try:
        # Recreating seeds draws fresh initial weights (then overwritten): a throwaway generator
        # takes those draws, so the caller's generators do not move.
        with discarded_draws():
            for slot_id in section.slots:
                slot_where = join_path(where, f"seed_slots.{slot_id}")
                restore_slot(model.slot(slot_id), payload["seed_slots"][slot_id], slot_where)
        device = model._device()
        for slot in model.slots():
            slot.to(device)
        _load_weights(model, section.state_dict, join_path(where, "state_dict"))
    except CheckpointError:
        model.detach()  # leave the caller's base as it was given
        raise
    return model


def _load_weights(model: AttachedModel, state_dict: dict[str, torch.Tensor], where: str) -> None:
    expected = _tensor_state(model, keep_vars=True)
    problems = [(join_path(where, key), "missing required key") for key in expected if key not in state_dict]
    problems += [
        (join_path(where, key), "unknown key (the base with these slots has no such tensor)")
        for key in state_dict
        if key not in expected
    ]
    for key, tensor in state_dict.items():
        if key not in expected:
            continue  # reported above
        want = expected[key]
        if (tensor.shape != want.shape or tensor.dtype != want.dtype):
            problems.append(
                (
                    join_path(where, key),
                    f"expected tensor of shape {tuple(want.shape)} and dtype {want.dtype}, "
                    f"got shape {tuple(tensor.shape)} and dtype {tensor.dtype}",
                )
            )
    if problems:
        raise CheckpointError.many(problems)
    result = model.load_state_dict(state_dict, strict=False)
    # Only the lifecycles' extra state may be left out: they were restored from their own section.
    leftover = [key for key in result.missing_keys if key.rsplit(".", 1)[-1] != _EXTRA_STATE_SUFFIX]
    assert not leftover and not result.unexpected_keys, (leftover, result.unexpected_keys)
