"""Restoring a slot's lifecycle from its persisted primitives (SeedSlot.lifecycle_state).

Kept apart from the slot's behaviour: it only checks a persisted record for
consistency and rebuilds the modules it implies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from esper.contracts.alpha import AlphaAlgorithm, AlphaMode
from esper.contracts.stages import SeedStage, is_active
from esper.seeds.alpha import BlendPlan
from esper.seeds.alpha_controller import AlphaController
from esper.seeds.blending import BlendGate
from esper.seeds.errors import LifecycleError
from esper.seeds.state import SeedRecord

if TYPE_CHECKING:
    from esper.seeds.slot import SeedSlot


def restore_lifecycle(slot: SeedSlot, state: dict) -> None:
    """Rebuild the slot from `lifecycle_state()` output.

    The seed module is recreated from its blueprint (and the blend gate for
    GATE) with fresh weights; the caller loads the real ones through the
    model's state_dict. A scheduled prune's seed is frozen again. Anything
    malformed or inconsistent raises a ValueError (LifecycleError, or
    pydantic's ValidationError for a bad seed state or alpha) before the
    slot is changed; `esper.checkpoints` validates first for path-named errors.
    """
    where = f"slot {slot.slot_id}: lifecycle state"
    if not isinstance(state, dict):
        raise LifecycleError(f"{where}: expected a dict, got {type(state).__name__}")
    keys = {"tick", "pending_prune_reason", "alpha", "seed_state"}
    if set(state) != keys:
        raise LifecycleError(f"{where}: expected keys {sorted(keys)}, got {sorted(state)}")
    tick, pending = state["tick"], state["pending_prune_reason"]
    if type(tick) is not int or tick < 0:
        raise LifecycleError(f"{where}: tick must be an int >= 0, got {tick!r}")
    if pending is not None and not isinstance(pending, str):
        raise LifecycleError(
            f"{where}: pending_prune_reason must be str or None, got {type(pending).__name__}"
        )
    alpha = AlphaController.from_dict(state["alpha"])
    record = None if state["seed_state"] is None else SeedRecord.model_validate(state["seed_state"])
    seed_state = None if record is None else record.seed_state()
    plan = None if record is None else BlendPlan(target=record.alpha_target, steps=record.blend_steps)
    stage = SeedStage.DORMANT if seed_state is None else seed_state.stage
    if seed_state is not None and stage in (SeedStage.UNKNOWN, SeedStage.DORMANT):
        raise LifecycleError(f"{where}: a slot in stage {stage.name} stores seed_state None")
    has_seed = is_active(stage) or stage == SeedStage.FOSSILIZED
    if not has_seed and alpha.alpha != 0.0:
        raise LifecycleError(
            f"{where}: stage {stage.name} has no seed, so alpha must be 0, got {alpha.alpha}"
        )
    ramping_out = alpha.mode == AlphaMode.DOWN and alpha.target == 0.0
    if pending is not None and not (stage in (SeedStage.BLENDING, SeedStage.HOLDING) and ramping_out):
        raise LifecycleError(
            f"{where}: a scheduled prune needs stage BLENDING or HOLDING with alpha ramping DOWN to 0, "
            f"got stage {stage.name}, alpha mode {alpha.mode.name}, target {alpha.target}"
        )
    seed: nn.Module | None = None
    gate: BlendGate | None = None
    if has_seed:
        assert seed_state is not None
        try:
            seed = slot.registry.create(seed_state.blueprint, slot.shape)
        except ValueError as error:
            raise LifecycleError(
                f"{where}: cannot rebuild blueprint {seed_state.blueprint!r}: {error}"
            ) from error
        if seed_state.alpha_algorithm == AlphaAlgorithm.GATE:
            gate = BlendGate(slot.shape.width, channel_dim=1 if slot.shape.topology == "cnn" else -1)
    if pending is not None:
        for module in (seed, gate):
            if module is not None:
                module.requires_grad_(False)
    # Everything is checked and built: now change the slot.
    slot.seed = seed
    slot.blend_gate = gate
    slot.alpha.restore(alpha, plan)
    slot.state = seed_state
    slot.tick = tick
    slot.pending_prune_reason = pending
