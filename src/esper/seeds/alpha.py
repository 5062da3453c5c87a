"""SeedAlpha: the one holder of a seed's alpha (how strongly its output is blended in).

The walk from a controller's decision to the forward pass, function by function:

1. A controller (`esper.control.heuristic`, the policy, a baseline) returns a
   `Decision`; `esper.control.execute.execute` checks it and calls the model:
   - GERMINATE: `MorphogeneticModel.germinate` -> `SeedSlot.germinate`, which
     calls `SeedAlpha.plant(BlendPlan(alpha_target, blend_steps))`: alpha stays
     0, the plan says where the blend will go and how fast;
   - ADVANCE from TRAINING: `MorphogeneticModel.advance` -> `SeedSlot.advance`
     -> `SeedSlot._gated_move`, which plans `SeedAlpha.blend_ramp()` before the
     gate runs and, if the gate passes, `SeedAlpha.follow(ramp)`;
   - SET_ALPHA_TARGET: `MorphogeneticModel.set_alpha_target` ->
     `SeedSlot.set_alpha_target`, which plans `SeedAlpha.retarget_ramp(...)`
     and then `SeedAlpha.follow(ramp, blend_target=target)`;
   - PRUNE with steps: `SeedSlot.prune` plans `SeedAlpha.ramp_down(...)`.
2. Once per epoch `MorphogeneticModel.step_epoch` -> `SeedSlot.step_epoch`
   -> `AlphaController.step` moves alpha one tick along the ramp.
3. Every forward, `SeedSlot.forward` asks `SeedAlpha.tensor(h)` for the alpha
   tensor and hands it to `esper.seeds.blending.blend`. Counterfactual
   measurement (`esper.training.counterfactual.measure` ->
   `MorphogeneticModel.fused_forward` -> `SeedSlot.force_alpha`) runs forwards
   inside `SeedAlpha.forcing(value)`, which `tensor` then returns instead;
   leaving the `with` block restores the seed's own alpha.

Nothing else stores alpha: the slot keeps one SeedAlpha for its whole life, the
tensor cache is keyed by value (so a change of alpha needs no invalidation),
and the forced value lives only inside its `with` block.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from esper.contracts.alpha import AlphaCurve
from esper.seeds.alpha_controller import DEFAULT_STEEPNESS, AlphaController, AlphaControllerError
from esper.seeds.blending import AlphaTensorCache


@dataclass(frozen=True)
class BlendPlan:
    """Where a seed's blend goes (`target`) and in how many epochs (`steps`, the tempo).

    Chosen at germination; SET_ALPHA_TARGET changes the target. The ramp toward it
    starts when the seed enters BLENDING.
    """

    target: float
    steps: int


class SeedAlpha(AlphaController):
    """A seed's alpha: value and ramp (the controller), blend plan, forced value, forward tensor.

    See the module docstring for the walk from a decision to the forward pass.
    The schedule (value, target, ramp) is the inherited `AlphaController`; a new
    ramp is planned on a plain controller copy and adopted with `follow` once
    every check has passed, so a refusal leaves the slot's alpha as it was.
    """

    def __init__(self) -> None:
        super().__init__()
        # None while the slot has no seed; kept after a prune (the pruned seed's record shows it).
        self.blend: BlendPlan | None = None
        self._forced: float | Tensor | None = None
        self._cache = AlphaTensorCache()

    # ------------------------------------------------------------ schedule
    def schedule(self) -> AlphaController:
        """A plain copy of the schedule, to plan a new ramp on."""
        ramp = AlphaController()
        _copy_schedule(self, ramp)
        return ramp

    def follow(self, ramp: AlphaController, *, blend_target: float | None = None) -> None:
        """Adopt a planned schedule (and, for SET_ALPHA_TARGET, the blend's new target)."""
        if blend_target is not None:
            if self.blend is None:
                raise AlphaControllerError("cannot change the blend target: no seed is planted")
            self.blend = BlendPlan(target=blend_target, steps=self.blend.steps)
        _copy_schedule(ramp, self)

    def plant(self, plan: BlendPlan) -> None:
        """A new seed: alpha 0 at rest, blending later as `plan` says."""
        self.follow(AlphaController())
        self.blend = plan

    def clear(self) -> None:
        """The seed left the forward: alpha 0 at rest (the plan stays as the seed's record)."""
        self.follow(AlphaController())

    def free(self) -> None:
        """The slot is free again: alpha 0 at rest and no plan."""
        self.follow(AlphaController())
        self.blend = None

    def restore(self, schedule: AlphaController, plan: BlendPlan | None) -> None:
        """Take a checkpoint's schedule and plan (validated by the caller)."""
        self.follow(schedule)
        self.blend = plan

    def blend_ramp(self) -> AlphaController:
        """The ramp a seed takes on entering BLENDING: to the plan's target over its steps."""
        if self.blend is None:
            raise AlphaControllerError("no blend plan: no seed is planted")
        ramp = self.schedule()
        ramp.retarget(self.blend.target, self.blend.steps, AlphaCurve.LINEAR)
        return ramp

    def retarget_ramp(
        self, target: float, steps: int, curve: AlphaCurve = AlphaCurve.LINEAR, steepness: float = DEFAULT_STEEPNESS
    ) -> AlphaController:
        """A ramp from the current alpha to `target` (SET_ALPHA_TARGET)."""
        ramp = self.schedule()
        ramp.retarget(target, steps, curve, steepness)
        return ramp

    def ramp_down(self, steps: int, curve: AlphaCurve, steepness: float) -> AlphaController:
        """A ramp to 0 from wherever alpha is now, overriding a ramp in progress (a scheduled prune)."""
        ramp = self.schedule()
        ramp.halt()
        ramp.retarget(0.0, steps, curve, steepness)
        return ramp

    # ------------------------------------------------------------- forward
    @property
    def forced(self) -> bool:
        """Whether a `forcing` block is open (forward then uses the forced value)."""
        return self._forced is not None

    def forcing(self, value: float | Tensor) -> AbstractContextManager[None]:
        """Use `value` instead of alpha in forward until the `with` block ends.

        `value` is a number in [0, 1] or a floating 0-dim or per-sample (batch,)
        tensor. Checked here, before the block is entered; does not nest.
        """
        if self._forced is not None:
            raise AlphaControllerError("does not nest")
        if isinstance(value, Tensor):
            if not value.dtype.is_floating_point or value.dim() > 1:
                raise AlphaControllerError(
                    f"tensor must be a floating 0-dim or (batch,) tensor, "
                    f"got dtype {value.dtype} and shape {tuple(value.shape)}"
                )
        elif isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise AlphaControllerError(f"value must be a number in [0, 1], got {value!r}")
        return self._forced_block(value)

    @contextmanager
    def _forced_block(self, value: float | Tensor) -> Iterator[None]:
        self._forced = value
        try:
            yield
        finally:
            self._forced = None

    def tensor(self, like: Tensor) -> Tensor:
        """The alpha forward blends with, on `like`'s device and dtype (the forced value inside `forcing`)."""
        forced = self._forced
        if isinstance(forced, Tensor):
            return forced
        if forced is not None:
            # Built apart from the cache, so the seed's own cached alpha survives the forced block.
            return torch.tensor(forced, device=like.device, dtype=like.dtype)
        return self._cache.get(self.alpha, like.device, like.dtype)


def _copy_schedule(source: AlphaController, target: AlphaController) -> None:
    target.alpha, target.target, target.start = source.alpha, source.target, source.start
    target.mode, target.curve, target.steepness = source.mode, source.curve, source.steepness
    target.steps_total, target.steps_done = source.steps_total, source.steps_done
