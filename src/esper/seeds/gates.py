"""Quality gates: may a seed move to its next stage?

Each gate returns a GateResult naming every check that passed or failed.
Permissive mode (the training default) relaxes G2 to its epoch count.

Strict G2 judges the seed itself, not the model: a TRAINING seed's output never
reaches the model (straight-through), so the model's accuracy since the stage
began measures the host. What it checks instead is the seed's projected gain,
the validation accuracy points the model would gain with this seed blended in
at alpha 1 (`SeedMetrics.projected_contribution`, measured every epoch in the
same fused counterfactual pass as the contributions, and only when gates are
strict). "Never measured" fails.
"""

from __future__ import annotations

import math

from pydantic import Field

from esper.contracts.config import StrictConfig
from esper.contracts.gates import GateLevel, GateResult
from esper.contracts.lifecycle import GATE_FOR_TARGET
from esper.contracts.stages import SeedStage
from esper.seeds.alpha_controller import AlphaController
from esper.seeds.state import SeedState


class GateConfig(StrictConfig):
    """Gate thresholds (the rulebook's GATE_FOR_TARGET says which gate guards which move)."""

    permissive: bool = False
    g2_min_epochs: int = 3
    # Strict G2: the seed's projected gain (accuracy points the model would gain with the seed
    # blended in at alpha 1) must be at least this. 0.5 pt: more than a rounding change.
    g2_min_improvement_points: float = 0.5
    g2_min_gradient_ratio: float = 0.10
    g3_min_epochs: int = 3  # strict mode only
    g5_min_contribution_points: float = 1.0  # strict mode; permissive needs > 0
    # Not a gate but a rule of the BLENDING stage, kept here because every slot already holds
    # this config. While alpha < 1 the seed's input is detached, so with ADD or GATE blending
    # (lerp) the layers upstream of the slot get only (1 - alpha) of their gradient. True: the
    # seed's output carries the identity's gradient back to the host (its value is unchanged),
    # so upstream layers learn at the full rate while the seed stays isolated. Measured on the
    # text task (x0.5 host, four mlp seeds with 5-epoch ramps, seeds 0-1, against the static
    # host): False +0.064 bits/char, True -0.030 (no ramp at all: -0.053). Left out of dumps
    # while False, so configs and summaries written before it existed read and compare the same.
    blend_full_host_gradient: bool = Field(default=False, exclude_if=lambda value: value is False)


class _Checks:
    """Collects named checks and turns them into a GateResult."""

    def __init__(self, gate: GateLevel) -> None:
        self.gate = gate
        self.passed: list[str] = []
        self.failed: list[str] = []

    def check(self, ok: bool, name: str) -> None:
        (self.passed if ok else self.failed).append(name)

    def result(self) -> GateResult:
        total = len(self.passed) + len(self.failed)
        score = len(self.passed) / total if total else 1.0
        ok = not self.failed
        message = "all checks passed" if ok else "failed: " + ", ".join(self.failed)
        return GateResult(self.gate, ok, score, tuple(self.passed), tuple(self.failed), message)


def evaluate_gate(
    target: SeedStage, state: SeedState, alpha: AlphaController, config: GateConfig
) -> GateResult:
    """Evaluate the gate guarding the move of `state` to `target`."""
    if target not in GATE_FOR_TARGET:
        valid = ", ".join(s.name for s in GATE_FOR_TARGET)
        raise ValueError(f"no gate guards a move to {SeedStage(target).name}; gated targets are {valid}")
    gate = GATE_FOR_TARGET[target]
    checks = _Checks(gate)
    metrics = state.metrics
    if gate is GateLevel.G1:
        checks.check(state.stage == SeedStage.GERMINATED, "stage is GERMINATED")
    elif gate is GateLevel.G2:
        checks.check(
            metrics.epochs_in_stage >= config.g2_min_epochs, f"epochs_in_stage >= {config.g2_min_epochs}"
        )
        if not config.permissive:
            gain = metrics.projected_contribution
            checks.check(
                gain is not None and gain >= config.g2_min_improvement_points,
                f"projected gain >= {config.g2_min_improvement_points} pt"
                + (" (never measured)" if gain is None else f" (was {gain:.2f})"),
            )
            ratio = metrics.gradient_ratio
            checks.check(
                ratio is not None and ratio >= config.g2_min_gradient_ratio,
                f"gradient ratio >= {config.g2_min_gradient_ratio}"
                + (" (never measured)" if ratio is None else f" (was {ratio:.3f})"),
            )
    elif gate is GateLevel.G3:
        checks.check(alpha.at_target and alpha.target == 1.0, "alpha ramp finished at 1.0")
        if not config.permissive:
            checks.check(
                metrics.epochs_in_stage >= config.g3_min_epochs, f"epochs_in_stage >= {config.g3_min_epochs}"
            )
    else:  # G5
        contribution = metrics.counterfactual_contribution
        threshold = 0.0 if config.permissive else config.g5_min_contribution_points
        measured = contribution is not None
        checks.check(measured, "contribution measured")
        checks.check(
            contribution is not None and contribution > threshold
            if config.permissive
            else contribution is not None and contribution >= threshold,
            f"contribution {'>' if config.permissive else '>='} {threshold} pt",
        )
        grad = metrics.seed_gradient_norm
        checks.check(grad is None or math.isfinite(grad), "seed gradients finite")
        checks.check(state.stage == SeedStage.HOLDING, "stage is HOLDING")
    return checks.result()
