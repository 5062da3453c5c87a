"""What the MorphogeneticModel costs over plain PyTorch, and what the fused pass saves.

- dormant_overhead: forward+backward with every slot DORMANT vs the bare host.
- fossilized_overhead: forward+backward with a fossilized seed in every slot
  vs a hand-written static module applying the same layers and seeds.
- fused_counterfactual_speedup: one `fused_forward` over K alpha settings vs
  K separate forwards under `force_alpha` (eval mode, no grad).

The plain contender always shares the very same parameter tensors, and its
output is checked against ours before anything is timed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from esper.bench.timing import BenchError, BenchSettings, PairTiming, summarise, time_pair
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.gates import GateResult
from esper.contracts.stages import SeedStage
from esper.hosts import CNNHost, build_host
from esper.model import MorphogeneticModel
from esper.seeds.gates import GateConfig

__all__ = [
    "DORMANT_GOAL",
    "FOSSILIZED_GOAL",
    "HostCase",
    "StaticGrownCNN",
    "check_equal",
    "dormant_overhead",
    "fossilize_all",
    "fused_counterfactual_speedup",
    "grow_to_blending",
    "host_cases",
    "perturb_seeds",
    "require_passed",
    "train_step",
]

DORMANT_GOAL = 1.02
FOSSILIZED_GOAL = 1.05
# Fixed so the models and inputs of every run are the same.
_DATA_SEED = 1234


@dataclass(frozen=True)
class HostCase:
    """A CNN host configuration and the input batch it is timed on."""

    name: str
    in_channels: int
    widths: tuple[int, ...]
    spatial_dims: int
    batch: int
    length: int  # per spatial axis

    @property
    def description(self) -> str:
        spatial = "x".join([str(self.length)] * self.spatial_dims)
        return (
            f"{self.spatial_dims}-D CNN widths {list(self.widths)}, batch {self.batch}, "
            f"input {self.in_channels}x{spatial}"
        )

    def build_host(self) -> CNNHost:
        config = {
            "in_channels": self.in_channels,
            "num_classes": 10,
            "widths": list(self.widths),
            "spatial_dims": self.spatial_dims,
        }
        host = build_host("cnn", config)
        assert isinstance(host, CNNHost)
        return host

    def input(self) -> Tensor:
        generator = torch.Generator().manual_seed(_DATA_SEED)
        shape = (self.batch, self.in_channels, *([self.length] * self.spatial_dims))
        return torch.randn(shape, generator=generator)


def host_cases(tiny: bool) -> tuple[HostCase, ...]:
    """The mnist1d-like 1-D host and a CIFAR-like 2-D host (toy versions when tiny)."""
    if tiny:
        return (
            HostCase("cnn1d", 1, (16, 16), 1, batch=4, length=8),
            HostCase("cnn2d", 3, (16, 16), 2, batch=2, length=8),
        )
    return (
        HostCase("cnn1d", 1, (32, 64, 64), 1, batch=64, length=40),
        HostCase("cnn2d", 3, (32, 64, 128), 2, batch=32, length=32),
    )


# ------------------------------------------------------------ growing seeds
def require_passed(result: GateResult, slot_id: str, action: str) -> None:
    if not result.passed:
        raise BenchError(f"benchmark setup: {action} of slot {slot_id} failed: {result.message}")


def grow_to_blending(
    model: MorphogeneticModel,
    slot_ids: Sequence[str],
    blueprint: str,
    *,
    algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
    blend_steps: int = 4,
) -> None:
    """Germinate `blueprint` in each slot and take it through TRAINING into BLENDING.

    Needs a model built with GateConfig(permissive=True), whose G2 only counts epochs.
    """
    if not model.gate_config.permissive:
        raise ValueError("grow_to_blending needs a model built with GateConfig(permissive=True)")
    for sid in slot_ids:
        planted = model.germinate(sid, blueprint, alpha_algorithm=algorithm, blend_steps=blend_steps)
        require_passed(planted, sid, "germinate")
        require_passed(model.advance(sid), sid, "advance to TRAINING")
    for _ in range(model.gate_config.g2_min_epochs):
        model.step_epoch()
    for sid in slot_ids:
        require_passed(model.advance(sid), sid, "advance to BLENDING")


def fossilize_all(model: MorphogeneticModel, slot_ids: Sequence[str]) -> None:
    """Finish the blend ramps of BLENDING seeds, then hold and fossilize them."""
    plans = [model.slot(sid).alpha.blend for sid in slot_ids]
    if any(plan is None for plan in plans):
        raise ValueError(f"fossilize_all: every slot of {list(slot_ids)} must hold a planted seed")
    limit = max(plan.steps for plan in plans if plan is not None) + 1
    for _ in range(limit):
        if all(model.slot(sid).alpha.at_target for sid in slot_ids):
            break
        model.step_epoch()
    for sid in slot_ids:
        require_passed(model.advance(sid), sid, "advance to HOLDING")
        # Permissive G5 needs a measured, positive contribution.
        model.slot(sid).record_contribution(1.0)
        require_passed(model.fossilize(sid), sid, "fossilize")


def perturb_seeds(model: MorphogeneticModel) -> None:
    """Residual seeds are the identity at birth; make them compute something."""
    generator = torch.Generator().manual_seed(_DATA_SEED + 1)
    with torch.no_grad():
        for params in model.seed_parameter_groups().values():
            for param in params:
                param.add_(0.05 * torch.randn(param.shape, generator=generator, dtype=param.dtype))


# ------------------------------------------------------- plain counterparts
class StaticGrownCNN(nn.Module):
    """The grown network written by hand: `h = seed(block(h))` per block, then the head.

    ADD at alpha 1 is exactly the seed's output, so this computes what a
    model with every seed fossilized computes, with no slot machinery.
    """

    def __init__(self, host: CNNHost, seeds: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(seeds) != len(host.segments):
            raise ValueError(f"StaticGrownCNN: expected {len(host.segments)} seeds, got {len(seeds)}")
        self.blocks = host.segments
        self.seeds = nn.ModuleList(seeds)
        self.dropout = host.head_dropout
        self.classifier = host.classifier

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for block, seed in zip(self.blocks, self.seeds, strict=True):
            h = seed(block(h))
        return self.classifier(self.dropout(torch.flatten(h, 2).mean(dim=2)))


def train_step(module: nn.Module, x: Tensor) -> None:
    module(x).sum().backward()
    module.zero_grad(set_to_none=True)


def check_equal(ours: nn.Module, plain: nn.Module, x: Tensor, what: str) -> None:
    with torch.no_grad():
        a, b = ours(x), plain(x)
    if not torch.equal(a, b):
        diff = (a - b).abs().max().item()
        raise BenchError(f"{what}: our output differs from the plain module's (max abs diff {diff:.3g})")


# ------------------------------------------------------------------- suites
def dormant_overhead(settings: BenchSettings) -> dict[str, Any]:
    """Forward+backward: MorphogeneticModel with all slots DORMANT vs `host(x)`."""
    cases: dict[str, tuple[str, PairTiming]] = {}
    for case in host_cases(settings.tiny):
        host = case.build_host()
        model = MorphogeneticModel(host).train()
        x = case.input()
        check_equal(model, host, x, f"dormant_overhead/{case.name}")
        timing = time_pair(partial(train_step, model, x), partial(train_step, host, x), settings.plan)
        cases[case.name] = (case.description + ", forward+backward", timing)
    definition = "ours / plain: MorphogeneticModel (all slots DORMANT) vs host(x), same weights"
    return {"dormant_overhead": summarise(cases, kind="ratio", goal=DORMANT_GOAL, definition=definition)}


def fossilized_overhead(settings: BenchSettings) -> dict[str, Any]:
    """Forward+backward: every slot holding a fossilized conv_light seed vs StaticGrownCNN."""
    cases: dict[str, tuple[str, PairTiming]] = {}
    for case in host_cases(settings.tiny):
        host = case.build_host()
        model = MorphogeneticModel(host, gates=GateConfig(permissive=True)).train()
        slot_ids = model.slot_ids()
        grow_to_blending(model, slot_ids, "conv_light")
        fossilize_all(model, slot_ids)
        perturb_seeds(model)
        seeds = [model.slot(sid).seed for sid in slot_ids]
        static = StaticGrownCNN(host, seeds).train()  # type: ignore[arg-type]  # every slot holds a fossilized seed
        x = case.input()
        check_equal(model, static, x, f"fossilized_overhead/{case.name}")
        timing = time_pair(partial(train_step, model, x), partial(train_step, static, x), settings.plan)
        description = f"{case.description}, conv_light fossilized in every slot, forward+backward"
        cases[case.name] = (description, timing)
    definition = "ours / plain: MorphogeneticModel (every seed FOSSILIZED) vs hand-written static module"
    metric = summarise(cases, kind="ratio", goal=FOSSILIZED_GOAL, definition=definition)
    return {"fossilized_overhead": metric}


def _counterfactual_settings(slot_a: str, slot_b: str) -> list[dict[str, float]]:
    """As is, each seed alone switched off, both off: the settings of a 2-seed ablation."""
    return [{}, {slot_a: 0.0}, {slot_b: 0.0}, {slot_a: 0.0, slot_b: 0.0}]


def _fused(model: MorphogeneticModel, x: Tensor, settings: Sequence[Mapping[str, float]]) -> Tensor:
    with torch.no_grad():
        return model.fused_forward(x, settings)


def _separate(model: MorphogeneticModel, x: Tensor, settings: Sequence[Mapping[str, float]]) -> list[Tensor]:
    outputs = []
    with torch.no_grad():
        for setting in settings:
            with ExitStack() as stack:
                for sid, value in setting.items():
                    stack.enter_context(model.slot(sid).force_alpha(value))
                outputs.append(model(x))
    return outputs


def fused_counterfactual_speedup(settings: BenchSettings) -> dict[str, Any]:
    """Eval: `fused_forward` over 4 alpha settings vs 4 forwards under force_alpha."""
    cases: dict[str, tuple[str, PairTiming]] = {}
    for case in host_cases(settings.tiny):
        model = MorphogeneticModel(case.build_host(), gates=GateConfig(permissive=True))
        slot_a, slot_b = model.slot_ids()[-2:]
        grow_to_blending(model, [slot_a, slot_b], "conv_light")
        model.step_epoch()  # part-way up the ramp: 0 < alpha < 1
        for sid in (slot_a, slot_b):
            if model.slot(sid).stage != SeedStage.BLENDING or not 0 < model.slot(sid).alpha.alpha < 1:
                raise BenchError(f"benchmark setup: slot {sid} is not mid-blend")
        perturb_seeds(model)
        model.eval()
        x = case.input()
        alphas = _counterfactual_settings(slot_a, slot_b)
        fused = _fused(model, x, alphas)
        separate = torch.stack(_separate(model, x, alphas))
        if not torch.allclose(fused, separate, rtol=1e-4, atol=1e-5):
            diff = (fused - separate).abs().max().item()
            raise BenchError(f"fused_counterfactual/{case.name}: fused and separate differ by {diff:.3g}")
        ours, plain = partial(_fused, model, x, alphas), partial(_separate, model, x, alphas)
        description = f"{case.description}, 2 blending seeds, K={len(alphas)} settings, eval, no grad"
        cases[case.name] = (description, time_pair(ours, plain, settings.plan))
    definition = "plain / ours: K forwards under force_alpha vs one fused_forward of K settings"
    metric = summarise(cases, kind="speedup", goal=None, definition=definition)
    return {"fused_counterfactual_speedup": metric}
