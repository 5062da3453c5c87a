"""torch.compile: a compiled model follows the seed through every active stage.

One small model, compiled once; dynamo recompiles as the stage (and alpha)
change. Each compile costs tens of seconds on a 2-core CPU, so this is a
single grouped test.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.stages import SeedStage
from esper.hosts import CNNHost, CNNHostConfig
from esper.model import MorphogeneticModel
from esper.seeds import GateConfig

FAST = GateConfig(permissive=True, g2_min_epochs=0)
ATOL = 1e-5


@pytest.mark.slow
def test_compiled_matches_eager_in_every_active_stage() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    host = CNNHost(CNNHostConfig(in_channels=1, num_classes=3, widths=[8, 8], spatial_dims=1))
    model = MorphogeneticModel(host, gates=FAST).eval()
    # Two seeds moving in lockstep: ADD (which has a fast path at alpha 1) and GATE.
    model.germinate("r0c0", "depthwise", alpha_algorithm=AlphaAlgorithm.ADD, blend_steps=4)
    model.germinate("r0c1", "conv_light", alpha_algorithm=AlphaAlgorithm.GATE, blend_steps=4)
    slots = model.slots()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():  # the zero-initialised last layers: off the identity, so stages differ
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.randn(4, 1, 16, generator=g)
    compiled = torch.compile(model)

    outputs: dict[str, torch.Tensor] = {}

    def check(label: str, stage: SeedStage) -> None:
        assert [slot.stage for slot in slots] == [stage, stage]
        with torch.no_grad():
            eager = model(x)
            got = compiled(x)
        assert torch.allclose(got, eager, atol=ATOL), f"{label}: max diff {(got - eager).abs().max()}"
        outputs[label] = eager

    def advance_all() -> None:
        for slot in slots:
            assert slot.advance().passed

    advance_all()
    check("training", SeedStage.TRAINING)
    assert torch.equal(outputs["training"], host(x))  # straight-through: the host's value

    advance_all()
    model.step_epoch()
    check("blending 0.25", SeedStage.BLENDING)
    model.step_epoch()
    check("blending 0.5", SeedStage.BLENDING)
    assert [slot.alpha.alpha for slot in slots] == [0.5, 0.5]

    model.step_epoch()
    model.step_epoch()
    advance_all()
    check("holding", SeedStage.HOLDING)

    for slot in slots:
        slot.record_contribution(2.0)
        assert slot.fossilize().passed
    check("fossilized", SeedStage.FOSSILIZED)

    # The stages really differ, so a stale compiled graph could not have passed.
    for a, b in [("training", "blending 0.25"), ("blending 0.25", "blending 0.5"), ("blending 0.5", "holding")]:
        assert not torch.allclose(outputs[a], outputs[b], atol=1e-4), (a, b)
    torch._dynamo.reset()
