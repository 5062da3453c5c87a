"""Quality gates G1/G2/G3/G5: every check, strict and permissive, and unknown targets."""

from __future__ import annotations

import math

import pytest

from esper.contracts.alpha import AlphaAlgorithm, AlphaCurve
from esper.contracts.gates import GateLevel, GateResult
from esper.contracts.stages import SeedStage
from esper.seeds.alpha_controller import AlphaController
from esper.seeds.gates import GateConfig, evaluate_gate
from esper.seeds.state import SeedMetrics, SeedState

STRICT = GateConfig()
PERMISSIVE = GateConfig(permissive=True)


def make_state(stage: SeedStage, **metrics: object) -> SeedState:
    return SeedState(
        blueprint="conv_light",
        alpha_algorithm=AlphaAlgorithm.ADD,
        stage=stage,
        previous_stage=SeedStage.UNKNOWN,
        history=[],
        metrics=SeedMetrics(**metrics),
    )


def alpha_at(value: float) -> AlphaController:
    controller = AlphaController()
    controller.retarget(value, 0)
    return controller


def ramping() -> AlphaController:
    controller = AlphaController()
    controller.retarget(1.0, 4)
    controller.step()
    return controller


def training(
    epochs: int = 3,
    projected: float | None = 1.0,
    ratio: float | None = 0.2,
    start: float | None = 0.50,
    now: float | None = 0.50,
) -> SeedState:
    """A TRAINING seed; by default the model's accuracy did not move since the stage began."""
    return make_state(
        SeedStage.TRAINING,
        epochs_in_stage=epochs,
        accuracy_at_stage_start=start,
        current_accuracy=now,
        projected_contribution=projected,
        gradient_ratio=ratio,
    )


def failed_names(result: GateResult) -> str:
    return " | ".join(result.checks_failed)


# --------------------------------------------------------------------- G1


def test_g1_passes_from_germinated_only() -> None:
    ok = evaluate_gate(SeedStage.TRAINING, make_state(SeedStage.GERMINATED), AlphaController(), STRICT)
    assert ok.gate is GateLevel.G1 and ok.passed and ok.score == 1.0
    bad = evaluate_gate(SeedStage.TRAINING, make_state(SeedStage.BLENDING), AlphaController(), STRICT)
    assert not bad.passed and "stage is GERMINATED" in bad.checks_failed


# --------------------------------------------------------------------- G2


def test_g2_strict_passes_with_all_three() -> None:
    result = evaluate_gate(SeedStage.BLENDING, training(), AlphaController(), STRICT)
    assert result.gate is GateLevel.G2
    assert result.passed, result.message
    assert len(result.checks_passed) == 3 and result.checks_failed == ()
    assert result.score == 1.0
    assert result.message == "all checks passed"


@pytest.mark.parametrize(
    ("state", "fragment"),
    [
        (training(epochs=2), "epochs_in_stage >= 3"),
        (training(projected=0.49), "projected gain >= 0.5 pt (was 0.49)"),
        (training(projected=-10.0), "projected gain >= 0.5 pt (was -10.00)"),
        (training(projected=None), "projected gain >= 0.5 pt (never measured)"),
        # The model improving while the seed is in TRAINING is the host's doing, not the seed's.
        (training(projected=0.0, start=0.40, now=0.90), "projected gain >= 0.5 pt (was 0.00)"),
        (training(ratio=0.099), "gradient ratio >= 0.1 (was 0.099)"),
        (training(ratio=None), "gradient ratio >= 0.1 (never measured)"),
    ],
)
def test_g2_strict_each_check_can_fail_alone(state: SeedState, fragment: str) -> None:
    result = evaluate_gate(SeedStage.BLENDING, state, AlphaController(), STRICT)
    assert not result.passed
    assert len(result.checks_failed) == 1, result.checks_failed
    assert fragment in result.checks_failed[0]
    assert result.score == pytest.approx(2 / 3)
    assert result.message.startswith("failed: ") and fragment in result.message


def test_g2_gradient_ratio_zero_is_measured_not_never_measured() -> None:
    result = evaluate_gate(SeedStage.BLENDING, training(ratio=0.0), AlphaController(), STRICT)
    assert not result.passed
    assert "(was 0.000)" in failed_names(result)
    assert "never measured" not in failed_names(result)


def test_g2_thresholds_are_inclusive() -> None:
    exact = training(projected=0.5, ratio=0.10)
    assert evaluate_gate(SeedStage.BLENDING, exact, AlphaController(), STRICT).passed


def test_g2_strict_judges_the_seed_not_the_model() -> None:
    # The model's accuracy fell while the seed trained, but blending the seed in would gain 3 pt.
    result = evaluate_gate(SeedStage.BLENDING, training(projected=3.0, start=0.6, now=0.4), AlphaController(), STRICT)
    assert result.passed and "projected gain >= 0.5 pt (was 3.00)" in result.checks_passed


def test_g2_permissive_needs_only_epochs() -> None:
    unmeasured = training(projected=None, start=None, now=None, ratio=None)
    result = evaluate_gate(SeedStage.BLENDING, unmeasured, AlphaController(), PERMISSIVE)
    assert result.passed and result.checks_passed == ("epochs_in_stage >= 3",)
    worse = training(projected=-20.0, now=0.1, ratio=0.0)
    assert evaluate_gate(SeedStage.BLENDING, worse, AlphaController(), PERMISSIVE).passed
    early = training(epochs=2, projected=None, start=None, now=None, ratio=None)
    result = evaluate_gate(SeedStage.BLENDING, early, AlphaController(), PERMISSIVE)
    assert not result.passed and result.checks_failed == ("epochs_in_stage >= 3",)


def test_g2_config_thresholds_are_used() -> None:
    config = GateConfig(g2_min_epochs=5, g2_min_improvement_points=2.0, g2_min_gradient_ratio=0.5)

    def g2(state: SeedState) -> GateResult:
        return evaluate_gate(SeedStage.BLENDING, state, AlphaController(), config)

    assert not g2(training(epochs=4, projected=3.0, ratio=0.6)).passed
    assert g2(training(epochs=5, projected=3.0, ratio=0.6)).passed
    result = g2(training(epochs=5, projected=1.5, ratio=0.6))
    assert not result.passed and "projected gain >= 2.0 pt" in failed_names(result)


# --------------------------------------------------------------------- G3


def blending(epochs: int) -> SeedState:
    return make_state(SeedStage.BLENDING, epochs_in_stage=epochs)


def test_g3_strict_passes_at_full_alpha_after_min_epochs() -> None:
    result = evaluate_gate(SeedStage.HOLDING, blending(3), alpha_at(1.0), STRICT)
    assert result.gate is GateLevel.G3 and result.passed, result.message


@pytest.mark.parametrize(
    ("epochs", "alpha", "fragment"),
    [
        (2, alpha_at(1.0), "epochs_in_stage >= 3"),
        (5, alpha_at(0.7), "alpha ramp finished at 1.0"),
        (5, alpha_at(0.5), "alpha ramp finished at 1.0"),
        (5, ramping(), "alpha ramp finished at 1.0"),
        (5, AlphaController(), "alpha ramp finished at 1.0"),
    ],
)
def test_g3_strict_failures(epochs: int, alpha: AlphaController, fragment: str) -> None:
    result = evaluate_gate(SeedStage.HOLDING, blending(epochs), alpha, STRICT)
    assert not result.passed and result.checks_failed == (fragment,)


def test_g3_ramp_toward_one_that_has_not_landed_fails() -> None:
    controller = AlphaController()
    controller.retarget(1.0, 3, AlphaCurve.COSINE)
    controller.step()
    controller.step()
    assert 0.0 < controller.alpha < 1.0
    assert not evaluate_gate(SeedStage.HOLDING, blending(9), controller, STRICT).passed
    controller.step()
    assert evaluate_gate(SeedStage.HOLDING, blending(9), controller, STRICT).passed


def test_g3_permissive_skips_epochs_but_not_alpha() -> None:
    assert evaluate_gate(SeedStage.HOLDING, blending(0), alpha_at(1.0), PERMISSIVE).passed
    result = evaluate_gate(SeedStage.HOLDING, blending(10), alpha_at(0.7), PERMISSIVE)
    assert not result.passed and result.checks_failed == ("alpha ramp finished at 1.0",)


# --------------------------------------------------------------------- G5


def holding(
    contribution: float | None, grad: float | None = 1.0, stage: SeedStage = SeedStage.HOLDING
) -> SeedState:
    return make_state(stage, counterfactual_contribution=contribution, seed_gradient_norm=grad)


@pytest.mark.parametrize(
    ("contribution", "strict_ok", "permissive_ok"),
    [
        (None, False, False),
        (-3.0, False, False),
        (0.0, False, False),
        (0.01, False, True),
        (0.999, False, True),
        (1.0, True, True),
        (4.2, True, True),
    ],
)
def test_g5_contribution(contribution: float | None, strict_ok: bool, permissive_ok: bool) -> None:
    strict = evaluate_gate(SeedStage.FOSSILIZED, holding(contribution), alpha_at(1.0), STRICT)
    permissive = evaluate_gate(SeedStage.FOSSILIZED, holding(contribution), alpha_at(1.0), PERMISSIVE)
    assert strict.gate is GateLevel.G5
    assert strict.passed is strict_ok, strict.message
    assert permissive.passed is permissive_ok, permissive.message
    if contribution is None:
        assert "contribution measured" in strict.checks_failed
        assert "contribution measured" in permissive.checks_failed


def test_g5_threshold_from_config() -> None:
    config = GateConfig(g5_min_contribution_points=2.5)
    assert not evaluate_gate(SeedStage.FOSSILIZED, holding(2.4), alpha_at(1.0), config).passed
    assert evaluate_gate(SeedStage.FOSSILIZED, holding(2.5), alpha_at(1.0), config).passed


@pytest.mark.parametrize("grad", [math.nan, math.inf])
def test_g5_needs_finite_seed_gradients(grad: float) -> None:
    result = evaluate_gate(SeedStage.FOSSILIZED, holding(5.0, grad=grad), alpha_at(1.0), STRICT)
    assert not result.passed and result.checks_failed == ("seed gradients finite",)


def test_g5_unmeasured_gradient_is_not_unhealthy() -> None:
    assert evaluate_gate(SeedStage.FOSSILIZED, holding(5.0, grad=None), alpha_at(1.0), STRICT).passed


def test_g5_needs_holding() -> None:
    early = holding(5.0, stage=SeedStage.BLENDING)
    result = evaluate_gate(SeedStage.FOSSILIZED, early, alpha_at(1.0), STRICT)
    assert not result.passed and result.checks_failed == ("stage is HOLDING",)


# ------------------------------------------------------------ bad targets


@pytest.mark.parametrize(
    "target",
    [SeedStage.UNKNOWN, SeedStage.DORMANT, SeedStage.GERMINATED, SeedStage.PRUNED, SeedStage.EMBARGOED,
     SeedStage.RESETTING],
)
def test_unknown_target_raises(target: SeedStage) -> None:
    with pytest.raises(ValueError, match=f"no gate guards a move to {target.name}"):
        evaluate_gate(target, training(), AlphaController(), STRICT)


def test_gate_config_is_strict() -> None:
    with pytest.raises(ValueError, match="g2_min_epoch"):
        GateConfig(g2_min_epoch=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        GateConfig(permissive="yes")  # type: ignore[arg-type]


def test_evaluate_gate_is_pure() -> None:
    state = training()
    controller = alpha_at(1.0)
    before = (state.model_dump(), controller.to_dict())
    for target in (SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED):
        evaluate_gate(target, state, controller, STRICT)
    assert (state.model_dump(), controller.to_dict()) == before
