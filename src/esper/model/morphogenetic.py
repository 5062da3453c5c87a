"""MorphogeneticModel: a host's segments chained with seed slots.

    h = host.stem(x)
    for each segment i:  h = slot_i(segment_i(h))
    y = host.head(h)

Lifecycle operations are addressed by slot id and delegated to the slot.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from esper.blueprints import BlueprintRegistry, default_registry
from esper.contracts.alpha import AlphaAlgorithm, AlphaCurve
from esper.contracts.gates import GateResult
from esper.contracts.slot_ids import sort_slot_ids
from esper.contracts.stages import SeedStage, seed_runs_in_forward
from esper.hosts.protocol import HostProtocol
from esper.seeds.gates import GateConfig
from esper.seeds.gradient_health import gradient_norm
from esper.seeds.proximal import ProximalRecord
from esper.seeds.slot import LifecycleError, SeedSlot


@dataclass(frozen=True)
class ParamCounts:
    host: int
    seeds: int
    total: int
    per_slot: dict[str, int]


@dataclass(frozen=True)
class SlotReport:
    slot: str
    stage: str
    blueprint: str | None
    alpha: float
    alpha_algorithm: str | None
    contribution: float | None
    epochs_in_stage: int
    params: int


def _unique(params: Iterator[nn.Parameter] | Sequence[nn.Parameter]) -> dict[int, nn.Parameter]:
    return {id(p): p for p in params}


class MorphogeneticModel(nn.Module):
    def __init__(
        self,
        host: nn.Module,
        *,
        slots: Sequence[str] | None = None,
        gates: GateConfig | None = None,
        registry: BlueprintRegistry | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(host, HostProtocol):
            raise TypeError(
                f"host must implement esper.hosts.HostProtocol (stem, segments, head, slot_ids, slot_shape, config), "
                f"got {type(host).__name__}"
            )
        self.host = host
        available = host.slot_ids()
        chosen = list(available) if slots is None else list(slots)
        unknown = [s for s in chosen if s not in available]
        if unknown:
            raise ValueError(f"slots {unknown} are not slots of this host; available: {available}")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"slots must be unique, got {chosen}")
        registry = registry if registry is not None else default_registry()
        self.gate_config = gates if gates is not None else GateConfig()
        self.seed_slots = nn.ModuleDict(
            {
                sid: SeedSlot(sid, host.slot_shape(sid), gates=self.gate_config, registry=registry)
                for sid in sort_slot_ids(chosen)
            }
        )
        # Segment i is followed by the slot with the i-th host slot id, if enabled.
        self._chain: list[tuple[nn.Module, SeedSlot | None]] = [
            (segment, self.slot(sid) if sid in chosen else None)
            for segment, sid in zip(host.segments, available, strict=True)
        ]

    # ---------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        h = self.host.stem(x)
        for segment, slot in self._chain:
            h = segment(h)
            if slot is not None:
                h = slot(h)
        return self.host.head(h)

    def fused_forward(self, x: Tensor, alpha_settings: Sequence[Mapping[str, float]]) -> Tensor:
        """Evaluate K alpha settings in one batched pass: returns (K, B, ...).

        Each setting maps slot ids to the alpha used for them (slots not named
        keep their own alpha). Only in eval mode: batch-dependent layers
        (BatchNorm in training mode) would mix the K copies.
        """
        if self.training:
            raise RuntimeError("fused_forward is for evaluation: call model.eval() first")
        k = len(alpha_settings)
        if k == 0:
            raise ValueError("fused_forward needs at least one alpha setting")
        batch = x.shape[0]
        named = sorted({sid for setting in alpha_settings for sid in setting})
        for sid in named:
            self.slot(sid)
        dtype = next(self.host.parameters()).dtype
        # Everything before the first slot that varies is the same for all K settings:
        # compute it once, then replicate the features, not the input.
        first = next(
            (i for i, (_, slot) in enumerate(self._chain) if slot is not None and slot.slot_id in named),
            len(self._chain),
        )
        h = self.host.stem(x)
        for segment, slot in self._chain[:first]:
            h = segment(h)
            if slot is not None:
                h = slot(h)
        h = h.repeat(k, *([1] * (h.dim() - 1)))
        with ExitStack() as stack:
            for sid in named:
                slot = self.slot(sid)
                current = slot.alpha.alpha
                per_setting = torch.tensor(
                    [setting.get(sid, current) for setting in alpha_settings], dtype=dtype, device=x.device
                )
                stack.enter_context(slot.force_alpha(per_setting.repeat_interleave(batch)))
            for segment, slot in self._chain[first:]:
                h = segment(h)
                if slot is not None:
                    h = slot(h)
            out = self.host.head(h)
        return out.reshape(k, batch, *out.shape[1:])

    # ----------------------------------------------------------------- slots
    def slot(self, slot_id: str) -> SeedSlot:
        if slot_id not in self.seed_slots:
            raise LifecycleError(f"unknown slot {slot_id!r}; slots are {list(self.seed_slots)}")
        # Ignored below: nn.ModuleDict's values are typed Module; these are SeedSlots.
        return self.seed_slots[slot_id]  # type: ignore[return-value]

    def slot_ids(self) -> list[str]:
        return list(self.seed_slots)

    def slots(self) -> list[SeedSlot]:
        # Ignored below: nn.ModuleDict's values are typed Module; these are SeedSlots.
        return list(self.seed_slots.values())  # type: ignore[arg-type]

    def _device(self) -> torch.device:
        return next(self.host.parameters()).device

    def germinate(
        self,
        slot_id: str,
        blueprint: str,
        *,
        alpha_algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
        blend_steps: int = 5,
        alpha_target: float = 1.0,
    ) -> GateResult:
        return self.slot(slot_id).germinate(
            blueprint,
            alpha_algorithm=alpha_algorithm,
            blend_steps=blend_steps,
            alpha_target=alpha_target,
            device=self._device(),
        )

    def advance(self, slot_id: str) -> GateResult:
        return self.slot(slot_id).advance()

    def fossilize(self, slot_id: str) -> GateResult:
        return self.slot(slot_id).fossilize()

    def prune(
        self,
        slot_id: str,
        reason: str,
        *,
        steps: int = 0,
        curve: AlphaCurve = AlphaCurve.LINEAR,
        steepness: float = 12.0,
    ) -> None:
        self.slot(slot_id).prune(reason, steps=steps, curve=curve, steepness=steepness)

    def set_alpha_target(
        self,
        slot_id: str,
        target: float,
        *,
        steps: int,
        curve: AlphaCurve = AlphaCurve.LINEAR,
        steepness: float = 12.0,
    ) -> None:
        self.slot(slot_id).set_alpha_target(target, steps=steps, curve=curve, steepness=steepness)

    @contextmanager
    def recording_proximal(self) -> Iterator[ProximalRecord]:
        """Collect the TRAINING seeds' proximal terms of the training forwards run inside.

            with model.recording_proximal() as proximal:
                loss = loss_fn(model(x), y)
            penalty = proximal.penalty()  # None when no seed is TRAINING
            (loss if penalty is None else loss + weight * penalty).backward()

        Nothing is recorded outside the block, and nothing outlives it.
        """
        record = ProximalRecord(self.slot_ids())
        with ExitStack() as stack:
            for slot in self.slots():
                stack.enter_context(slot.recording_proximal(record))
            yield record

    def step_epoch(self) -> None:
        for slot in self.slots():
            slot.step_epoch()

    # ------------------------------------------------------------ accounting
    def host_parameters(self) -> list[nn.Parameter]:
        return list(_unique(self.host.parameters()).values())

    def seed_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Per slot with a seed module: that seed's (and its blend gate's) parameters."""
        return {slot.slot_id: slot.seed_parameters() for slot in self.slots() if slot.seed is not None}

    def param_counts(self) -> ParamCounts:
        host = _unique(self.host.parameters())
        per_slot: dict[str, int] = {}
        seen = set(host)
        for slot in self.slots():
            fresh = {k: p for k, p in _unique(slot.seed_parameters()).items() if k not in seen}
            seen.update(fresh)
            per_slot[slot.slot_id] = sum(p.numel() for p in fresh.values())
        host_count = sum(p.numel() for p in host.values())
        seeds = sum(per_slot.values())
        return ParamCounts(host=host_count, seeds=seeds, total=host_count + seeds, per_slot=per_slot)

    def active_seed_slots(self) -> list[str]:
        """Slots whose seed runs in forward and is not yet fossilized."""
        return [
            s.slot_id
            for s in self.slots()
            if seed_runs_in_forward(s.stage) and s.stage != SeedStage.FOSSILIZED
        ]

    def measure_gradients(self) -> None:
        """After backward: record every seed's gradient ratio against the host."""
        host_norm = gradient_norm(self.host_parameters())
        for slot in self.slots():
            slot.measure_gradients(host_norm)

    def reports(self) -> dict[str, SlotReport]:
        out: dict[str, SlotReport] = {}
        for slot in self.slots():
            state = slot.state
            out[slot.slot_id] = SlotReport(
                slot=slot.slot_id,
                stage=slot.stage.name,
                blueprint=None if state is None else state.blueprint,
                alpha=slot.alpha.alpha,
                alpha_algorithm=None if state is None else state.alpha_algorithm.name,
                contribution=None if state is None else state.metrics.counterfactual_contribution,
                epochs_in_stage=0 if state is None else state.metrics.epochs_in_stage,
                params=slot.seed_param_count(),
            )
        return out
