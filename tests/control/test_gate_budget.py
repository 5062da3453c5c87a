"""The parameter budget counts the blend gate that GATE adds to a seed."""

from __future__ import annotations

import pytest
import torch

from esper.contracts.actions import Op
from esper.contracts.alpha import AlphaAlgorithm
from esper.control import GrowthLimits
from esper.control.decision import Decision
from esper.control.execute import execute
from esper.control.legality import germination_cost, legal_blueprints
from esper.growth_rl.masks import build_masks
from esper.hosts import CNNHost, CNNHostConfig
from esper.model import MorphogeneticModel
from esper.seeds.blending import BlendGate, blend_param_count

BLUEPRINTS = ["norm", "conv_light"]


def model() -> MorphogeneticModel:
    torch.manual_seed(0)
    # The last slot is 64 wide: `norm` there costs 129 parameters, its gate 1,057.
    host = CNNHost(CNNHostConfig(in_channels=1, num_classes=3, widths=[32, 64, 64], spatial_dims=1))
    return MorphogeneticModel(host)


def slot_64(m: MorphogeneticModel) -> str:
    return next(s.slot_id for s in m.slots() if s.shape.width == 64)


@pytest.mark.parametrize("width", [1, 8, 15, 16, 64, 257])
def test_gate_param_count_is_exact(width: int) -> None:
    gate = BlendGate(width, channel_dim=1)
    assert blend_param_count(AlphaAlgorithm.GATE, width) == sum(p.numel() for p in gate.parameters())
    assert blend_param_count(AlphaAlgorithm.ADD, width) == 0
    assert blend_param_count(AlphaAlgorithm.MULTIPLY, width) == 0


def germinate(m: MorphogeneticModel, sid: str, algorithm: AlphaAlgorithm, budget: int) -> bool:
    decision = Decision(Op.GERMINATE, slot=sid, blueprint="norm", alpha_algorithm=algorithm, reason="test")
    return execute(m, decision, BLUEPRINTS, GrowthLimits(max_seeds=3, max_added_params=budget)).executed


def test_gated_norm_is_refused_under_a_200_parameter_budget() -> None:
    m = model()
    sid = slot_64(m)
    assert not germinate(m, sid, AlphaAlgorithm.GATE, 200)
    assert m.param_counts().seeds == 0
    assert germinate(m, sid, AlphaAlgorithm.ADD, 200)
    assert m.param_counts().seeds == 129


def test_gated_norm_fits_a_budget_that_counts_its_gate_exactly() -> None:
    m = model()
    sid = slot_64(m)
    cost = germination_cost(m.slot(sid), "norm", AlphaAlgorithm.GATE)
    assert cost == 1186
    assert not germinate(m, sid, AlphaAlgorithm.GATE, cost - 1)
    assert germinate(m, sid, AlphaAlgorithm.GATE, cost)
    assert m.param_counts().seeds == cost


def test_masks_admit_only_what_fits_with_any_algorithm() -> None:
    """The masks choose blueprint and blend style apart, so a masked-in blueprint fits with the gate."""
    m = model()
    sid = slot_64(m)
    index = m.slot_ids().index(sid)
    for budget, admitted in ((200, False), (1185, False), (1186, True)):
        limits = GrowthLimits(max_seeds=3, max_added_params=budget)
        masks = build_masks(m, BLUEPRINTS, limits)
        assert bool(masks.blueprint_by_slot[index, 0]) is admitted
        assert ("norm" in legal_blueprints(m, sid, BLUEPRINTS, limits)) is admitted
        assert "norm" in legal_blueprints(m, sid, BLUEPRINTS, limits, AlphaAlgorithm.ADD)
