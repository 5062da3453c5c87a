"""SeedSlot: one place in the host where a seed can grow, and its lifecycle.

Forward by stage:
- no seed, GERMINATED, PRUNED, EMBARGOED, RESETTING: exactly the identity;
- TRAINING: the seed sees `h.detach()` and joins by a straight-through term,
  so the output value equals the host's and the host's gradients are
  untouched, while the seed still learns from the task loss;
- BLENDING / HOLDING / FOSSILIZED: the alpha-weighted blend operator. While
  alpha < 1 the seed's input is detached (isolation); once alpha is 1 it is
  not, so the host layers upstream of the slot keep learning through it.
  With a lerp blend (ADD, GATE) the detached input also leaves upstream layers
  only (1 - alpha) of their gradient while blending, unless
  `gates.blend_full_host_gradient` gives them all of it.

Every refused action raises `LifecycleError` before anything is changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from esper.blueprints import BlueprintRegistry, default_registry
from esper.contracts.actions import Op
from esper.contracts.alpha import ALPHA_TARGETS, AlphaAlgorithm, AlphaCurve
from esper.contracts.constants import EMBARGO_EPOCHS
from esper.contracts.gates import GateLevel, GateResult
from esper.contracts.lifecycle import FOSSILIZE_TARGET, Verdict
from esper.contracts.shapes import SlotShape
from esper.contracts.stages import SeedStage, is_active, is_valid_transition, seed_runs_in_forward
from esper.distributed.measurement import in_collective_measurement
from esper.seeds.alpha import BlendPlan, SeedAlpha
from esper.seeds.alpha_controller import AlphaController, AlphaControllerError
from esper.seeds.blending import BlendGate, blend, straight_through
from esper.seeds.errors import LifecycleError
from esper.seeds.gates import GateConfig, evaluate_gate
from esper.seeds.gradient_health import gradient_norm, gradient_ratio
from esper.seeds.lifecycle_restore import restore_lifecycle
from esper.seeds.proximal import ProximalRecord, proximal_term
from esper.seeds.rules import check
from esper.seeds.state import SeedMetrics, SeedState, StageRecord, record_primitives
from esper.seeds.sync import distributed_active, sync_decision

# Called with (slot_id, from_stage, to_stage, reason) on every transition.
StageListener = Callable[["SeedSlot", SeedStage, SeedStage, str], None]
# Called with every gate evaluation.
GateListener = Callable[["SeedSlot", SeedStage, GateResult], None]

# The stages whose seed runs in forward, as a tuple: torch.compile (2.13) does not
# guard on a stage tested with `in frozenset` inside a module's forward, so a
# compiled model kept running the old stage's graph after a transition.
_FORWARD_STAGES = tuple(stage for stage in SeedStage if seed_runs_in_forward(stage))


class SeedSlot(nn.Module):
    def __init__(
        self,
        slot_id: str,
        shape: SlotShape,
        *,
        gates: GateConfig | None = None,
        registry: BlueprintRegistry | None = None,
    ) -> None:
        super().__init__()
        self.slot_id = slot_id
        self.shape = shape
        self.gate_config = gates if gates is not None else GateConfig()
        self.registry = registry if registry is not None else default_registry()
        self.seed: nn.Module | None = None
        self.blend_gate: BlendGate | None = None
        self.state: SeedState | None = None
        # The one holder of the seed's alpha, for the slot's whole life (see esper.seeds.alpha).
        self.alpha = SeedAlpha()
        self.tick = 0
        # Set when a scheduled prune is ramping alpha down; pruned at alpha 0.
        self.pending_prune_reason: str | None = None
        # Open only inside `recording_proximal`: where a training forward adds its proximal term.
        self._proximal: ProximalRecord | None = None
        self.stage_listeners: list[StageListener] = []
        self.gate_listeners: list[GateListener] = []

    # ------------------------------------------------------------------ views
    @property
    def stage(self) -> SeedStage:
        return SeedStage.DORMANT if self.state is None else self.state.stage

    @property
    def is_free(self) -> bool:
        return self.state is None

    def seed_parameters(self) -> list[nn.Parameter]:
        params: list[nn.Parameter] = []
        for module in (self.seed, self.blend_gate):
            if module is not None:
                params.extend(module.parameters())
        return params

    def seed_param_count(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.seed_parameters()}.values())

    def _require_state(self, action: str) -> SeedState:
        if self.state is None:
            raise LifecycleError(f"slot {self.slot_id}: cannot {action}: the slot is DORMANT (no seed)")
        return self.state

    # ---------------------------------------------------------------- forward
    def _isolated(self) -> bool:
        return self.alpha.alpha < 1.0

    def forward(self, h: Tensor) -> Tensor:
        state = self.state
        if state is None or state.stage not in _FORWARD_STAGES:
            return h
        assert self.seed is not None  # a running stage always has a seed module
        if state.stage == SeedStage.TRAINING:
            seed_in = h.detach()
            if not self.alpha.forced:
                seed_out = self.seed(seed_in)
                if self.training and self._proximal is not None:
                    # The straight-through signal alone never sees its own effect and drifts
                    # without bound; the training step adds this term to the loss so the seed
                    # learns a bounded step in the direction the task gradient asks for.
                    self._proximal.add(self.slot_id, proximal_term(seed_in, seed_out))
                return straight_through(h, seed_out)
            # Counterfactual "what if it were blended in": G2 judges a TRAINING seed by it.
            return blend(state.alpha_algorithm, h, self.seed(seed_in), seed_in, self.alpha.tensor(h), self.blend_gate)
        unforced = not self.alpha.forced
        if unforced and self.alpha.alpha == 1.0 and state.alpha_algorithm is AlphaAlgorithm.ADD:
            # lerp(h, s, 1) is exactly s and passes h no gradient: skipping it saves an
            # elementwise op and its backward (~5% of a small CNN's training step).
            seed_out = self.seed(h)
            if seed_out.shape != h.shape:
                raise ValueError(
                    f"seed_out shape {tuple(seed_out.shape)} must equal host shape {tuple(h.shape)}"
                )
            return seed_out
        seed_in = h.detach() if self._isolated() else h
        seed_out = self.seed(seed_in)
        if (
            self.gate_config.blend_full_host_gradient
            and seed_in is not h
            and state.alpha_algorithm is not AlphaAlgorithm.MULTIPLY
        ):
            # `h - seed_in` is zero in value and the identity in gradient: lerp's seed term then
            # passes upstream the alpha share of the gradient its host term does not.
            seed_out = seed_out + (h - seed_in)
        return blend(state.alpha_algorithm, h, seed_out, seed_in, self.alpha.tensor(h), self.blend_gate)

    @contextmanager
    def force_alpha(self, value: float | Tensor) -> Iterator[None]:
        """Temporarily evaluate with a different alpha (counterfactual evaluation).

        `value` is a float or a per-sample tensor of shape (batch,); the seed's
        alpha holds it (`SeedAlpha.forcing`) until the block ends. Refuses to
        nest and refuses under distributed training, where ranks would diverge.
        """
        if self.alpha.forced:
            raise LifecycleError(f"slot {self.slot_id}: force_alpha does not nest")
        if distributed_active() and not in_collective_measurement():
            raise LifecycleError(
                f"slot {self.slot_id}: force_alpha is not allowed under torch.distributed outside a "
                "collective measurement (every rank would have to force the same alpha at the same moment)"
            )
        state = self._require_state("force alpha")
        if not seed_runs_in_forward(state.stage):
            raise LifecycleError(
                f"slot {self.slot_id}: force_alpha needs a seed in forward, stage is {state.stage.name}"
            )
        try:
            forcing = self.alpha.forcing(value)
        except AlphaControllerError as error:
            raise LifecycleError(f"slot {self.slot_id}: force_alpha {error}") from error
        with forcing:
            yield

    @contextmanager
    def recording_proximal(self, record: ProximalRecord) -> Iterator[None]:
        """Training forwards inside the block add this seed's proximal term to `record`."""
        if self._proximal is not None:
            raise LifecycleError(f"slot {self.slot_id}: recording_proximal does not nest")
        self._proximal = record
        try:
            yield
        finally:
            self._proximal = None

    # -------------------------------------------------------------- lifecycle
    def _enforce(self, op: Op, *, alpha_target: float | None = None) -> Verdict:
        """The rulebook's verdict on `op` here and now; a refusal raises before anything changes."""
        verdict = check(op, self, alpha_target=alpha_target)
        if not verdict.allowed:
            raise LifecycleError(f"slot {self.slot_id}: {verdict.reason}")
        return verdict

    def _check_transition(self, target: SeedStage) -> None:
        state = self.state
        assert state is not None
        if not is_valid_transition(state.stage, target):
            raise LifecycleError(
                f"slot {self.slot_id}: {state.stage.name} -> {target.name} is not a valid transition"
            )

    def _transition(self, target: SeedStage, reason: str) -> None:
        state = self.state
        assert state is not None
        source = state.stage
        self._check_transition(target)
        state.previous_stage = source
        state.stage = target
        state.metrics.epochs_in_stage = 0
        state.metrics.accuracy_at_stage_start = state.metrics.current_accuracy
        state.history.append(StageRecord(stage=target, tick=self.tick, reason=reason))
        for listener in self.stage_listeners:
            listener(self, source, target, reason)

    def germinate(
        self,
        blueprint: str,
        *,
        alpha_algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
        blend_steps: int = 5,
        alpha_target: float = 1.0,
        device: torch.device | str | None = None,
    ) -> GateResult:
        """G0: validate everything, probe the seed's shape, then plant it."""
        self._enforce(Op.GERMINATE)
        if not isinstance(alpha_algorithm, AlphaAlgorithm):
            raise LifecycleError(
                f"slot {self.slot_id}: alpha_algorithm must be an AlphaAlgorithm, got {alpha_algorithm!r}"
            )
        if alpha_target not in ALPHA_TARGETS:
            raise LifecycleError(
                f"slot {self.slot_id}: alpha_target must be one of {ALPHA_TARGETS}, got {alpha_target!r}"
            )
        if not isinstance(blend_steps, int) or blend_steps < 0:
            raise LifecycleError(f"slot {self.slot_id}: blend_steps must be an int >= 0, got {blend_steps!r}")
        try:
            seed = self.registry.create(blueprint, self.shape)
        except ValueError as error:
            raise LifecycleError(f"slot {self.slot_id}: {error}") from error
        probe = _shape_probe(self.shape)
        with torch.no_grad():
            out = seed(probe)
        if out.shape != probe.shape:
            raise LifecycleError(
                f"slot {self.slot_id}: blueprint {blueprint!r} changed the shape "
                f"{tuple(probe.shape)} -> {tuple(out.shape)}"
            )
        gate = None
        if alpha_algorithm == AlphaAlgorithm.GATE:
            gate = BlendGate(self.shape.width, channel_dim=1 if self.shape.topology == "cnn" else -1)
        if device is not None:
            seed = seed.to(device)
            gate = gate.to(device) if gate is not None else None
        self.seed = seed
        self.blend_gate = gate
        self.alpha.plant(BlendPlan(target=alpha_target, steps=blend_steps))
        self.pending_prune_reason = None
        self.state = SeedState(
            blueprint=blueprint,
            alpha_algorithm=alpha_algorithm,
            stage=SeedStage.DORMANT,
            previous_stage=SeedStage.UNKNOWN,
            history=[],
            metrics=SeedMetrics(),
        )
        self._transition(SeedStage.GERMINATED, f"germinate {blueprint}")
        self.state.metrics.accuracy_at_germination = self.state.metrics.current_accuracy
        return GateResult(GateLevel.G0, True, 1.0, ("blueprint known", "shape preserved"), (), "germinated")

    def advance(self, target: SeedStage | None = None) -> GateResult:
        """Try to move to the next stage (or `target`); the gate decides.

        The gate decision goes through the distributed sync point so every rank
        takes rank 0's decision. A failed gate changes nothing.
        """
        expected = self._enforce(Op.ADVANCE).gated_target
        assert expected is not None  # an allowed ADVANCE always names where it goes
        if target is not None and target != expected:
            raise LifecycleError(
                f"slot {self.slot_id}: advance from {self.stage.name} goes to {expected.name}, not {target.name}"
            )
        return self._gated_move(expected)

    def _gated_move(self, expected: SeedStage) -> GateResult:
        """Move to `expected` if its gate passes (the rulebook has allowed the move)."""
        state = self.state
        assert state is not None
        # Everything the transition needs is planned before the gate runs, so a passed gate
        # never leaves the slot half-moved (in BLENDING with the ramp refused, alpha stuck at 0).
        ramp = self._entry_ramp(expected)
        result = sync_decision(evaluate_gate(expected, state, self.alpha, self.gate_config))
        for listener in self.gate_listeners:
            listener(self, expected, result)
        if result.passed:
            self._transition(expected, f"gate {result.gate.name} passed")
            if ramp is not None:
                self.alpha.follow(ramp)
        return result

    def _entry_ramp(self, stage: SeedStage) -> AlphaController | None:
        """The alpha schedule the slot takes on entering `stage` (None: unchanged), planned on a copy."""
        if stage != SeedStage.BLENDING:
            return None
        try:
            return self.alpha.blend_ramp()
        except AlphaControllerError as error:
            raise LifecycleError(f"slot {self.slot_id}: cannot start blending: {error}") from error

    def fossilize(self) -> GateResult:
        """HOLDING -> FOSSILIZED if G5 passes (through the same sync point as `advance`)."""
        self._enforce(Op.FOSSILIZE)
        return self._gated_move(FOSSILIZE_TARGET)

    def set_alpha_target(
        self, target: float, *, steps: int, curve: AlphaCurve = AlphaCurve.LINEAR, steepness: float = 12.0
    ) -> None:
        """Retarget the blend (BLENDING with the ramp at rest, or HOLDING -> BLENDING)."""
        self._enforce(Op.SET_ALPHA_TARGET, alpha_target=target)
        state = self.state
        assert state is not None  # the rulebook refuses a retarget without a seed
        # Planned on a copy: the slot changes only once every check has passed.
        try:
            ramp = self.alpha.retarget_ramp(target, steps, curve, steepness)
        except AlphaControllerError as error:
            raise LifecycleError(f"slot {self.slot_id}: cannot retarget: {error}") from error
        self.alpha.follow(ramp, blend_target=target)
        if state.stage == SeedStage.HOLDING:
            self._transition(SeedStage.BLENDING, f"alpha retarget to {target}")

    def prune(
        self, reason: str, *, steps: int = 0, curve: AlphaCurve = AlphaCurve.LINEAR, steepness: float = 12.0
    ) -> None:
        """Remove the seed. steps == 0: now. steps > 0: ramp alpha to 0 with the
        seed frozen, then prune (only meaningful once alpha > 0)."""
        self._enforce(Op.PRUNE)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise LifecycleError(f"slot {self.slot_id}: prune steps must be an int >= 0, got {steps!r}")
        if steps == 0 or self.alpha.alpha == 0.0:
            self._prune_now(reason)
            return
        # Plan the ramp on a copy: a bad curve or steepness must refuse before
        # the seed is frozen or the running ramp is halted.
        # A prune overrides a ramp in progress: ramp down from wherever alpha is.
        try:
            ramp = self.alpha.ramp_down(steps, curve, steepness)
        except AlphaControllerError as error:
            raise LifecycleError(f"slot {self.slot_id}: cannot schedule the prune: {error}") from error
        for param in self.seed_parameters():
            param.requires_grad_(False)
        self.alpha.follow(ramp)
        self.pending_prune_reason = reason

    def _prune_now(self, reason: str) -> None:
        state = self.state
        assert state is not None
        self._check_transition(SeedStage.PRUNED)
        state.prune_reason = reason
        self.seed = None
        self.blend_gate = None
        self.alpha.clear()
        self.pending_prune_reason = None
        self._transition(SeedStage.PRUNED, reason)

    def step_epoch(self) -> None:
        """One epoch tick: ramp alpha, count epochs, run the prune cooldown."""
        self.tick += 1
        state = self.state
        if state is None:
            return
        stage = state.stage
        state.metrics.epochs_in_stage += 1
        if is_active(stage) or stage == SeedStage.FOSSILIZED:
            state.metrics.epochs_total += 1
        if stage in (SeedStage.BLENDING, SeedStage.HOLDING):
            self.alpha.step()
            if self.pending_prune_reason is not None and self.alpha.at_target:
                self._prune_now(self.pending_prune_reason)
        elif stage == SeedStage.PRUNED:
            self._transition(SeedStage.EMBARGOED, "embargo")
        elif stage == SeedStage.EMBARGOED and state.metrics.epochs_in_stage >= EMBARGO_EPOCHS:
            self._transition(SeedStage.RESETTING, "embargo over")
        elif stage == SeedStage.RESETTING:
            self._transition(SeedStage.DORMANT, "slot free")
            self.state = None
            self.alpha.free()

    # ------------------------------------------------------ checkpoint state
    def lifecycle_state(self) -> dict:
        """The lifecycle as primitives (weights travel in the model's state_dict)."""
        return {
            "tick": self.tick,
            "pending_prune_reason": self.pending_prune_reason,
            "alpha": self.alpha.to_dict(),
            "seed_state": None if self.state is None else self._seed_record(),
        }

    def _seed_record(self) -> dict:
        """The seed's state with its blend plan (held by `self.alpha`), as `SeedRecord` reads it."""
        plan = self.alpha.blend
        assert plan is not None  # planted with the seed, kept until the slot is free again
        assert self.state is not None
        return record_primitives(self.state, blend_steps=plan.steps, alpha_target=plan.target)

    def restore_lifecycle(self, state: dict) -> None:
        """Rebuild the slot from `lifecycle_state()` output (see esper.seeds.lifecycle_restore)."""
        restore_lifecycle(self, state)

    # ----------------------------------------------------------- measurements
    def record_accuracy(self, accuracy: float) -> None:
        """The model's validation accuracy (fraction) this epoch."""
        if self.state is not None:
            self.state.metrics.current_accuracy = accuracy
            if self.state.metrics.accuracy_at_stage_start is None:
                self.state.metrics.accuracy_at_stage_start = accuracy
            if self.state.metrics.accuracy_at_germination is None:
                self.state.metrics.accuracy_at_germination = accuracy

    def record_projected_contribution(self, contribution_points: float) -> None:
        """TRAINING: accuracy points the seed would add if blended in at alpha 1."""
        self._require_state("record a projected contribution").metrics.projected_contribution = contribution_points

    def record_contribution(self, contribution_points: float) -> None:
        self._require_state("record a contribution").metrics.record_contribution(contribution_points)

    def measure_gradients(self, host_gradient_norm: float | None) -> float | None:
        """After backward: record the seed's gradient norm and seed/host ratio."""
        if self.state is None or self.seed is None:
            return None
        seed_norm = gradient_norm(self.seed.parameters())
        if seed_norm is None:
            return None
        self.state.metrics.seed_gradient_norm = seed_norm
        ratio = gradient_ratio(seed_norm, host_gradient_norm)
        self.state.metrics.gradient_ratio = ratio
        return ratio


def _shape_probe(shape: SlotShape) -> Tensor:
    """A tiny input of the slot's layout, used to check a seed keeps the shape."""
    if shape.topology == "cnn":
        return torch.zeros((2, shape.width) + (4,) * shape.spatial_dims)
    return torch.zeros((2, 4, shape.width))
