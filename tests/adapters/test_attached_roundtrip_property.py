"""Property: an attached model in any stage, with any blend operator, survives every round trip exactly."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import esper
from esper.adapters import AttachedModel, attach, export_attached
from esper.checkpoints.self_test import STAGES, drive_to_stage
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.stages import SeedStage
from esper.model.attached import SlotHook
from esper.seeds.gates import GateConfig

X = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(0))


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(), nn.Linear(144, 3)
    )


def _staged(stage: SeedStage, algorithm: AlphaAlgorithm, blueprints: tuple[str, str], seed: int) -> AttachedModel:
    model = attach(_net(seed), slots=["0", "2"], example_input=X, gates=GateConfig(permissive=True))
    drive_to_stage(model, stage, algorithm, dict(zip(model.slot_ids(), blueprints, strict=True)), seed=seed)
    return model.eval()


def _out(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(X)


@settings(max_examples=12, deadline=None)
@given(
    stage=st.sampled_from(STAGES),
    algorithm=st.sampled_from(list(AlphaAlgorithm)),
    blueprints=st.tuples(
        st.sampled_from(["conv_light", "conv_small", "depthwise", "norm"]),
        st.sampled_from(["conv_heavy", "bottleneck", "attention", "norm"]),
    ),
    seed=st.integers(0, 3),
)
def test_every_stage_round_trips(
    stage: SeedStage, algorithm: AlphaAlgorithm, blueprints: tuple[str, str], seed: int
) -> None:
    model = _staged(stage, algorithm, blueprints, seed)
    want = _out(model)
    stages = {s: model.slot(s).stage for s in model.slot_ids()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pt"
        esper.save_model(model, path)
        loaded = esper.load_model(path, base=_net(seed + 10)).eval()
    assert torch.equal(_out(loaded), want)
    assert {s: loaded.slot(s).stage for s in loaded.slot_ids()} == stages
    assert [s.lifecycle_state() for s in loaded.slots()] == [s.lifecycle_state() for s in model.slots()]
    via_state = attach(_net(seed + 20), slots=["0", "2"], example_input=X, gates=GateConfig(permissive=True))
    via_state.load_state_dict(model.state_dict())
    assert torch.equal(_out(via_state.eval()), want)
    twin = copy.deepcopy(model)  # hooks follow the copied slots, not the original ones
    assert torch.equal(_out(twin), want)
    hooked = [h.slot for m in twin.host.modules() for h in m._forward_hooks.values() if isinstance(h, SlotHook)]
    assert len(hooked) == 2 and all(any(slot is own for own in twin.slots()) for slot in hooked)
    if stage == SeedStage.FOSSILIZED:
        assert torch.equal(_out(export_attached(model).eval()), want)
