"""The projected contribution of a TRAINING seed: measured only for strict gates, judged by strict G2."""

from __future__ import annotations

import pytest
import torch

from esper.checkpoints.self_test import perturb_seeds
from esper.contracts.stages import SeedStage
from esper.model import MorphogeneticModel
from esper.training.batches import eval_mode, evaluate
from esper.training.config import TrainConfig
from esper.training.counterfactual import measure
from esper.training.growth_run import GrowthRun

FAST = {"max_batches_per_epoch": 2, "epochs": 6, "seed": 4}
# Strict gates that pass G2 on the epoch count and gradient ratio alone, so the projected gain decides.
STRICT = {"permissive": False, "g2_min_epochs": 0, "g2_min_gradient_ratio": 0.0}


def _run_with_training_seed(gates: dict) -> GrowthRun:
    run = GrowthRun(TrainConfig(task="mnist1d", gates=gates, **FAST))
    run.train_epoch()
    run.model.germinate("r0c1", "conv_light")
    assert run.model.advance("r0c1").passed  # G1
    run.optimizers.sync_with_model()
    return run


def _count_settings(run: GrowthRun, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    original = MorphogeneticModel.fused_forward

    def spy(self: MorphogeneticModel, x: torch.Tensor, settings: list) -> torch.Tensor:
        seen.append(len(settings))
        return original(self, x, settings)

    monkeypatch.setattr(MorphogeneticModel, "fused_forward", spy)
    return seen


def test_projected_gain_is_the_accuracy_with_the_seed_blended_in_at_alpha_1() -> None:
    run = _run_with_training_seed({"permissive": True})
    perturb_seeds(run.model, seed=7)  # a seed that is not the identity changes predictions
    val = run.splits.val
    result = measure(run.model, val, 256, run.device, project=True)
    with eval_mode(run.model):
        base = evaluate(run.model, val, 256, run.device).accuracy
        with run.model.slot("r0c1").force_alpha(1.0):
            blended = evaluate(run.model, val, 256, run.device).accuracy
    assert set(result.projected) == {"r0c1"}
    assert result.projected["r0c1"] == pytest.approx(100.0 * (blended - base), abs=1e-9)
    assert result.projected["r0c1"] != 0.0
    assert measure(run.model, val, 256, run.device, project=False).projected == {}


def test_permissive_runs_do_not_pay_for_the_projection(monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run_with_training_seed({"permissive": True})
    seen = _count_settings(run, monkeypatch)
    run.train_epoch()
    assert seen == []  # nothing else to measure, so no counterfactual pass at all
    assert run.model.slot("r0c1").state.metrics.projected_contribution is None


def test_strict_runs_measure_the_projection_every_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run_with_training_seed(STRICT)
    seen = _count_settings(run, monkeypatch)
    run.train_epoch()
    assert seen and set(seen) == {2}  # "all" and "on:r0c1"
    assert run.model.slot("r0c1").state.metrics.projected_contribution is not None


@pytest.mark.parametrize("margin", [-0.01, 0.01])
def test_strict_g2_passes_exactly_when_the_projected_gain_reaches_the_threshold(margin: float) -> None:
    run = _run_with_training_seed(STRICT)
    run.train_epoch()
    slot = run.model.slot("r0c1")
    gain = slot.state.metrics.projected_contribution
    assert gain is not None
    # The same run, judged against a threshold just below / just above the measured gain.
    slot.gate_config = slot.gate_config.model_copy(update={"g2_min_improvement_points": gain + margin})
    result = run.model.advance("r0c1")
    assert result.passed is (margin < 0)
    check = f"projected gain >= {gain + margin} pt (was {gain:.2f})"
    assert check in (result.checks_passed if margin < 0 else result.checks_failed)
    assert slot.stage == (SeedStage.BLENDING if margin < 0 else SeedStage.TRAINING)


def test_strict_g2_refuses_a_seed_whose_projection_was_never_measured() -> None:
    run = GrowthRun(TrainConfig(task="mnist1d", gates={**STRICT, "g2_min_improvement_points": -100.0}, **FAST))
    run.train_epoch()
    run.model.germinate("r0c1", "conv_light")
    assert run.model.advance("r0c1").passed  # G1; no epoch has measured it in TRAINING yet
    run.model.slot("r0c1").state.metrics.gradient_ratio = 1.0
    result = run.model.advance("r0c1")
    assert not result.passed
    assert result.checks_failed == ("projected gain >= -100.0 pt (never measured)",)
