"""Exact action masks, built only from esper.control.legality.

Every action the masks admit is executable (legality asks the lifecycle rulebook the
slot itself enforces, and the executor checks the same), so a sampled action is never
refused:
- op: legal_ops;
- slot_by_op[op]: legal_slots(op);
- blueprint_by_slot[slot]: legal_blueprints (empty for occupied slots);
- alpha_target_by_slot[slot]: legal_alpha_targets, used for SET_ALPHA_TARGET;
- alpha_target (GERMINATE), style, tempo, alpha_speed, alpha_curve: all valid
  (germination accepts every target; every speed and curve is executable).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from esper.contracts.actions import HEAD_CREDIT, ActionSpace, FactoredAction, Op
from esper.contracts.alpha import ALPHA_TARGETS
from esper.control.legality import (
    GrowthLimits,
    legal_alpha_targets,
    legal_blueprints,
    legal_ops,
    legal_slots,
)
from esper.model import MorphogeneticModel
from esper.rl.distributions import PLAIN_MASK_HEADS, SLOT_CONDITIONAL_TARGET_OP, ActionMasks


def action_space_for(model: MorphogeneticModel, blueprints: Sequence[str]) -> ActionSpace:
    return ActionSpace(len(model.slot_ids()), len(blueprints))


def build_masks(model: MorphogeneticModel, blueprints: Sequence[str], limits: GrowthLimits) -> ActionMasks:
    """The masks of one decision (no batch dim): exactly what legality allows now."""
    names = list(blueprints)
    slot_ids = model.slot_ids()
    sizes = action_space_for(model, names).head_sizes()
    ops = set(legal_ops(model, names, limits))
    op_mask = torch.tensor([op in ops for op in Op], dtype=torch.bool)
    slot_rows = []
    for op in Op:
        legal = set(legal_slots(model, op, names, limits))
        slot_rows.append([sid in legal for sid in slot_ids])
    blueprint_rows = []
    target_rows = []
    for sid in slot_ids:
        fitting = set(legal_blueprints(model, sid, names, limits))
        blueprint_rows.append([name in fitting for name in names])
        targets = legal_alpha_targets(model.slot(sid))
        target_rows.append([target in targets for target in ALPHA_TARGETS])
    return ActionMasks(
        op=op_mask,
        slot_by_op=torch.tensor(slot_rows, dtype=torch.bool),
        blueprint_by_slot=torch.tensor(blueprint_rows, dtype=torch.bool),
        **{name: torch.ones(sizes[name], dtype=torch.bool) for name in PLAIN_MASK_HEADS},
        alpha_target_by_slot=torch.tensor(target_rows, dtype=torch.bool),
    )


def wait_only_masks(space: ActionSpace) -> ActionMasks:
    """Masks that admit only WAIT (an environment whose run has stopped)."""
    sizes = space.head_sizes()
    op = torch.zeros(sizes["op"], dtype=torch.bool)
    op[Op.WAIT] = True
    return ActionMasks(
        op=op,
        slot_by_op=torch.zeros(sizes["op"], sizes["slot"], dtype=torch.bool),
        blueprint_by_slot=torch.zeros(sizes["slot"], sizes["blueprint"], dtype=torch.bool),
        **{name: torch.ones(sizes[name], dtype=torch.bool) for name in PLAIN_MASK_HEADS},
        alpha_target_by_slot=torch.zeros(sizes["slot"], sizes["alpha_target"], dtype=torch.bool),
    )


def check_admitted(masks: ActionMasks, action: FactoredAction) -> None:
    """Raise ValueError naming the first credited head whose choice the (unbatched) masks forbid."""
    if masks.op.dim() != 1:
        raise ValueError(f"check_admitted: expected unbatched masks, got batch shape {tuple(masks.batch_shape)}")
    op = Op(action.op)
    if not bool(masks.op[op]):
        raise ValueError(f"action op {op.name} is not allowed now")
    credited = HEAD_CREDIT[op]
    if "slot" in credited and not bool(masks.slot_by_op[op, action.slot]):
        raise ValueError(f"action slot {action.slot} is not allowed for {op.name} now")
    if "blueprint" in credited and not bool(masks.blueprint_by_slot[action.slot, action.blueprint]):
        raise ValueError(f"action blueprint {action.blueprint} is not allowed in slot {action.slot} now")
    for name in PLAIN_MASK_HEADS:
        if name not in credited:
            continue
        if name == "alpha_target" and op == SLOT_CONDITIONAL_TARGET_OP:
            row = masks.alpha_target_by_slot[action.slot]
        else:
            row = getattr(masks, name)
        if not bool(row[getattr(action, name)]):
            raise ValueError(f"action {name} {getattr(action, name)} is not allowed for {op.name} now")


def masks_to_arrays(masks: ActionMasks) -> dict[str, np.ndarray]:
    """Plain numpy copies, cheap to send between processes."""
    return {name: tensor.numpy().copy() for name, tensor in masks.tensors().items()}


def masks_from_arrays(arrays: dict[str, np.ndarray]) -> ActionMasks:
    expected = set(ActionMasks.__dataclass_fields__)
    if set(arrays) != expected:
        raise ValueError(f"masks_from_arrays: expected keys {sorted(expected)}, got {sorted(arrays)}")
    return ActionMasks(**{name: torch.from_numpy(np.asarray(arrays[name], dtype=bool)) for name in expected})
