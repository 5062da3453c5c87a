"""Reward components per mode, and exact Shapley values at an episode's end."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from esper.contracts.actions import Op
from esper.contracts.stages import SeedStage
from esper.control.decision import Decision
from esper.growth_rl.rewards import (
    RewardConfig,
    SeedView,
    StateView,
    attribution,
    compute_reward,
    potential,
    rent,
    shapley_values,
)
from esper.hosts import CNNHost, CNNHostConfig
from esper.model import MorphogeneticModel
from esper.seeds.gates import GateConfig

SHAPED = RewardConfig()
WAIT = Decision(Op.WAIT)


def view(*seeds: SeedView, accuracy: float = 0.5, host: int = 1000, seed_params: int = 0) -> StateView:
    return StateView({f"r0c{i}": s for i, s in enumerate(seeds)}, accuracy, host, seed_params)


def seed(stage: SeedStage, epochs: int = 0, c: float | None = None, progress: float | None = None) -> SeedView:
    return SeedView(stage, epochs, c, progress)


def test_attribution_is_the_contribution_capped() -> None:
    assert attribution(SHAPED, seed(SeedStage.HOLDING, c=-3.0)) == -3.0
    assert attribution(SHAPED, seed(SeedStage.HOLDING, c=2.0)) == 2.0
    assert attribution(SHAPED, seed(SeedStage.HOLDING, c=23.0)) == 3.0  # inflated solo ablation: capped
    tempered = RewardConfig(attribution_cap=10.0, attribution_weight=0.5)
    assert attribution(tempered, seed(SeedStage.HOLDING, c=23.0)) == 5.0
    assert attribution(SHAPED, seed(SeedStage.HOLDING)) == 0.0  # unmeasured: nothing


def test_shaped_pays_no_per_step_attribution_for_blending_or_holding_seeds() -> None:
    """A seed kept in BLENDING/HOLDING earns nothing beyond the accuracy it adds."""
    held = view(seed(SeedStage.HOLDING, epochs=3, c=23.0, progress=20.0), seed_params=40)
    _, parts = compute_reward(SHAPED, held, WAIT, True, held, done=False, rollback=False)
    assert set(parts) == {"accuracy_delta", "pbrs", "rent", "action_cost"} and parts["action_cost"] == 0.0
    assert parts["accuracy_delta"] == 0.0
    assert sum(parts.values()) < 0.0  # rent and the potential's gamma leak


def test_potential_and_rent() -> None:
    state = view(seed(SeedStage.GERMINATED), seed(SeedStage.HOLDING, epochs=3), seed(SeedStage.FOSSILIZED, 40))
    assert potential(SHAPED, state) == pytest.approx(1.0 + (5.5 + 0.9) + (6.0 + 2.0))
    assert potential(SHAPED, view(seed(SeedStage.EMBARGOED, 3), seed(SeedStage.DORMANT))) == 0.0
    assert rent(SHAPED, view(seed_params=1000)) == pytest.approx(-0.5 * math.log(2.0))
    assert rent(SHAPED, view(seed_params=10**12)) == -8.0
    assert rent(SHAPED, view(seed_params=0)) == 0.0


def test_shaped_step_components() -> None:
    before = view(seed(SeedStage.HOLDING, epochs=2, c=5.0, progress=5.0), seed(SeedStage.DORMANT), accuracy=0.5)
    after = view(
        seed(SeedStage.FOSSILIZED, c=5.0, progress=5.0), seed(SeedStage.DORMANT), accuracy=0.52, seed_params=100
    )
    total, parts = compute_reward(
        SHAPED, before, Decision(Op.FOSSILIZE, slot="r0c0"), True, after, done=False, rollback=False
    )
    assert parts["accuracy_delta"] == pytest.approx(2.0)
    assert parts["pbrs"] == pytest.approx(0.3 * (0.995 * 6.0 - (5.5 + 0.6)))
    assert parts["rent"] == pytest.approx(-0.5 * math.log1p(0.1))
    assert parts["action_cost"] == -0.01
    assert parts["fossilize"] == pytest.approx(0.5 + 3.0)  # contribution capped at 3 points
    assert total == pytest.approx(sum(parts.values()))
    harmful = view(seed(SeedStage.HOLDING, epochs=2, c=-4.0, progress=0.0))
    _, parts = compute_reward(SHAPED, harmful, Decision(Op.FOSSILIZE, slot="r0c0"), True, harmful,
                              done=False, rollback=False)
    assert parts["fossilize"] == pytest.approx(-(1.0 + 0.4))
    _, parts = compute_reward(SHAPED, harmful, Decision(Op.PRUNE, slot="r0c0"), True, harmful,
                              done=False, rollback=False)
    assert parts["prune"] == 0.0 and parts["action_cost"] == -0.005  # accuracy_delta pays the removal
    bonus = RewardConfig(prune_harm_base=0.3, prune_harm_per_point=0.05)
    _, parts = compute_reward(bonus, harmful, Decision(Op.PRUNE, slot="r0c0"), True, harmful,
                              done=False, rollback=False)
    assert parts["prune"] == pytest.approx(0.3 + 0.05 * 4.0)
    _, parts = compute_reward(SHAPED, harmful, Decision(Op.PRUNE, slot="r0c0"), False, harmful,
                              done=False, rollback=True)
    assert "prune" not in parts and "action_cost" not in parts and parts["rollback"] == -10.0


def test_terminal_rewards_per_mode() -> None:
    before = view(seed(SeedStage.HOLDING, epochs=1, c=2.0, progress=4.0), accuracy=0.6)
    after = view(
        seed(SeedStage.FOSSILIZED, c=2.0, progress=4.0), seed(SeedStage.FOSSILIZED, c=0.5),
        accuracy=0.7, seed_params=500,
    )
    _, parts = compute_reward(SHAPED, before, WAIT, True, after, done=True, rollback=False)
    assert parts["terminal"] == pytest.approx(0.05 * 70.0 + 3.0)  # only the c >= 1 fossil counts
    assert parts["pbrs"] == pytest.approx(-0.3 * potential(SHAPED, before))  # phi(end) = 0
    assert parts["accuracy_delta"] == pytest.approx(10.0)
    simple = RewardConfig(mode="simplified", pbrs_gamma=0.99)
    total, parts = compute_reward(simple, before, WAIT, True, after, done=True, rollback=False)
    assert set(parts) == {"accuracy_delta", "rent", "terminal"}
    assert parts["accuracy_delta"] == pytest.approx(10.0)
    sparse = RewardConfig(mode="sparse")
    total, parts = compute_reward(sparse, before, WAIT, True, after, done=True, rollback=False)
    assert parts == {"terminal": pytest.approx(70.0 - 0.1 * 1500 / 500_000)}
    total, parts = compute_reward(sparse, before, WAIT, True, after, done=False, rollback=False)
    assert total == 0.0 and parts == {}


@settings(max_examples=40, deadline=None)
@given(
    stages=st.lists(st.sampled_from(list(SeedStage)), min_size=1, max_size=4),
    contributions=st.lists(st.none() | st.floats(-20, 20), min_size=4, max_size=4),
    mode=st.sampled_from(["shaped", "simplified", "sparse"]),
    done=st.booleans(),
    rollback=st.booleans(),
)
def test_components_always_sum_to_the_total(
    stages: list[SeedStage], contributions: list[float | None], mode: str, done: bool, rollback: bool
) -> None:
    config = RewardConfig(mode=mode)  # type: ignore[arg-type]
    state = view(*(seed(s, 2, c, 3.0) for s, c in zip(stages, contributions, strict=False)), seed_params=300)
    for op in Op:
        decision = Decision(op, slot=None if op == Op.WAIT else "r0c0")
        total, parts = compute_reward(config, state, decision, True, state, done=done, rollback=rollback)
        assert math.isfinite(total) and total == pytest.approx(sum(parts.values()))
        assert ("rollback" in parts) == rollback


def test_shapley_is_exact_and_efficient() -> None:
    """Shapley values sum to v(all) - v(none); a lone seed's value is its plain contribution."""
    torch.manual_seed(0)
    host = CNNHost(CNNHostConfig(in_channels=1, num_classes=3, widths=[4, 4, 4], spatial_dims=1))
    model = MorphogeneticModel(host, gates=GateConfig(permissive=True))
    x, y = torch.randn(96, 1, 12), torch.randint(0, 3, (96,))
    data = TensorDataset(x, y)
    assert shapley_values(model, data, 32, torch.device("cpu")) == {}
    for sid in ("r0c0", "r0c2"):
        model.germinate(sid, "conv_light", blend_steps=0)
        model.advance(sid)
        for _ in range(3):
            model.step_epoch()
        assert model.advance(sid).passed  # BLENDING at alpha 1
        with torch.no_grad():  # make the seeds matter: perturb their zero-initialised last layers
            for p in model.slot(sid).seed_parameters():
                p.add_(torch.randn_like(p))
    model.eval()

    def accuracy(settings: dict[str, float]) -> float:
        with torch.no_grad():
            out = model.fused_forward(x, [settings])[0]
        return 100.0 * float((out.argmax(-1) == y).double().mean())

    values = shapley_values(model, data, 32, torch.device("cpu"))
    assert set(values) == {"r0c0", "r0c2"}
    assert any(abs(v) > 1.0 for v in values.values())  # the seeds do matter: the check below is not 0 == 0
    everything, nothing = accuracy({}), accuracy({"r0c0": 0.0, "r0c2": 0.0})
    assert sum(values.values()) == pytest.approx(everything - nothing)
    only_a, only_b = accuracy({"r0c2": 0.0}), accuracy({"r0c0": 0.0})
    assert values["r0c0"] == pytest.approx(0.5 * (only_a - nothing) + 0.5 * (everything - only_b))
