"""Rewards for the learned controller, in accuracy points, and episode-end Shapley attribution.

A step applies the action to the state s (after an epoch) and trains the next
epoch, reaching s'. Its reward is computed from s (the pre-action state: its
counterfactual contributions), the action and whether it executed, and s'
(potential, parameters). On the last step s' is the model right after the
action, freshly validated. Modes (every weight is a RewardConfig value):

shaped:
  accuracy_delta  accuracy_delta_weight * (val points s' - s), every step: it
               telescopes to the episode's accuracy gain, so no action sequence
               can farm it (a seed is paid for what it adds to the model)
  pbrs         pbrs_weight * (gamma * phi(s') - phi(s)); phi = sum over seeds of
               the stage potential + min(0.3 * epochs in stage, 2); phi(end) = 0
  rent         -min(0.5 * ln(1 + seed params / host params), 8), every step
  action_cost  germinate -0.02, fossilize -0.01, prune -0.005, retarget -0.05
  fossilize    once per seed: +(0.5 + attribution_weight * min(c, attribution_cap))
               for c >= 1 pt after >= 1 epoch in HOLDING; -(1 + 0.1 |c|) for a
               harmful (c < 0) seed. The solo-ablation c overstates a seed the
               host has come to depend on, hence the cap; it is paid only at
               fossilization (no per-step attribution: paying c every step while
               a seed stayed in BLENDING/HOLDING was gamed by retargeting alpha
               forever instead of fossilizing).
  prune        +(prune_harm_base + per_point |c|) for removing a harmful seed;
               0 by default, since accuracy_delta already pays the removal and a
               positive bonus could be farmed by germinate-then-prune cycles
  terminal     0.05 * val accuracy (points) + 3 per fossilized seed with c >= 1
simplified: accuracy_delta (val points s' - s) + rent + terminal (as shaped).
sparse: only terminal = val accuracy (points) - 0.1 * total params / 500k.
Every mode: rollback -10 on the step whose epoch the governor rolled back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import torch
from pydantic import Field
from torch.utils.data import TensorDataset

from esper.contracts.actions import Op
from esper.contracts.config import StrictConfig
from esper.contracts.stages import SeedStage, seed_runs_in_forward
from esper.control.decision import Decision
from esper.model import MorphogeneticModel
from esper.training.batches import eval_mode

RewardMode = Literal["shaped", "simplified", "sparse"]
MAX_SHAPLEY_SEEDS = 4


class RewardConfig(StrictConfig):
    mode: RewardMode = "shaped"
    attribution_weight: float = 1.0  # per point of contribution, paid once at fossilization
    attribution_cap: float = Field(3.0, ge=0)  # points; solo ablation overstates contribution
    pbrs_weight: float = 0.3
    pbrs_gamma: float = Field(0.995, ge=0, le=1)  # should equal PPO's gamma
    potential_germinated: float = 1.0
    potential_training: float = 2.0
    potential_blending: float = 3.5
    potential_holding: float = 5.5
    potential_fossilized: float = 6.0
    stage_epoch_bonus: float = 0.3
    stage_epoch_bonus_cap: float = 2.0
    rent_weight: float = 1.0
    rent_log_coef: float = 0.5
    rent_cap: float = 8.0
    cost_germinate: float = 0.02
    cost_fossilize: float = 0.01
    cost_prune: float = 0.005
    cost_retarget: float = 0.05  # > the gamma leak of any potential, so toggling never pays
    fossilize_bonus_base: float = 0.5
    fossilize_bonus_min_contribution: float = 1.0
    fossilize_bonus_min_holding_epochs: int = Field(1, ge=0)
    fossilize_harm_base: float = 1.0
    fossilize_harm_per_point: float = 0.1
    prune_harm_base: float = 0.0  # accuracy_delta already pays removing harm
    prune_harm_per_point: float = 0.0
    terminal_accuracy_weight: float = 0.05
    terminal_fossil_bonus: float = 3.0
    terminal_fossil_min_contribution: float = 1.0
    accuracy_delta_weight: float = 1.0  # shaped and simplified
    sparse_param_weight: float = 0.1
    sparse_param_scale: float = Field(500_000.0, gt=0)
    rollback_penalty: float = 10.0


@dataclass(frozen=True)
class SeedView:
    stage: SeedStage
    epochs_in_stage: int
    contribution: float | None  # last measured, points
    progress: float | None  # points gained since germination


@dataclass(frozen=True)
class StateView:
    """What a reward needs to know about one moment of a run."""

    slots: dict[str, SeedView]
    val_accuracy: float  # fraction
    host_params: int
    seed_params: int


def snapshot(model: MorphogeneticModel, val_accuracy: float) -> StateView:
    slots = {}
    for slot in model.slots():
        metrics = None if slot.state is None else slot.state.metrics
        slots[slot.slot_id] = SeedView(
            stage=slot.stage,
            epochs_in_stage=0 if metrics is None else metrics.epochs_in_stage,
            contribution=None if metrics is None else metrics.counterfactual_contribution,
            progress=None if metrics is None else metrics.total_improvement_points(),
        )
    counts = model.param_counts()
    return StateView(slots, val_accuracy, counts.host, counts.seeds)


def _potential_table(config: RewardConfig) -> dict[SeedStage, float]:
    return {
        SeedStage.GERMINATED: config.potential_germinated,
        SeedStage.TRAINING: config.potential_training,
        SeedStage.BLENDING: config.potential_blending,
        SeedStage.HOLDING: config.potential_holding,
        SeedStage.FOSSILIZED: config.potential_fossilized,
    }


def potential(config: RewardConfig, view: StateView) -> float:
    table = _potential_table(config)
    total = 0.0
    for seed in view.slots.values():
        if seed.stage in table:
            bonus = min(config.stage_epoch_bonus * seed.epochs_in_stage, config.stage_epoch_bonus_cap)
            total += table[seed.stage] + bonus
    return total


def attribution(config: RewardConfig, seed: SeedView) -> float:
    """One-time credit for fossilizing a seed: its contribution, capped (0 if unmeasured)."""
    if seed.contribution is None:
        return 0.0
    return config.attribution_weight * min(seed.contribution, config.attribution_cap)


def rent(config: RewardConfig, view: StateView) -> float:
    ratio = view.seed_params / view.host_params if view.host_params else 0.0
    return -config.rent_weight * min(config.rent_log_coef * math.log1p(ratio), config.rent_cap)


def terminal(config: RewardConfig, view: StateView) -> float:
    contributing = sum(
        1
        for seed in view.slots.values()
        if seed.stage == SeedStage.FOSSILIZED
        and seed.contribution is not None
        and seed.contribution >= config.terminal_fossil_min_contribution
    )
    return config.terminal_accuracy_weight * 100.0 * view.val_accuracy + config.terminal_fossil_bonus * contributing


def _action_terms(config: RewardConfig, before: StateView, decision: Decision) -> dict[str, float]:
    costs = {
        Op.GERMINATE: config.cost_germinate,
        Op.FOSSILIZE: config.cost_fossilize,
        Op.PRUNE: config.cost_prune,
        Op.SET_ALPHA_TARGET: config.cost_retarget,
    }
    terms = {"action_cost": -costs[decision.op] if decision.op in costs else 0.0}
    if decision.slot is None or decision.op not in (Op.FOSSILIZE, Op.PRUNE):
        return terms
    seed = before.slots[decision.slot]
    c = seed.contribution
    if decision.op == Op.FOSSILIZE and c is not None:
        bonus = 0.0
        if c >= config.fossilize_bonus_min_contribution and (
            seed.epochs_in_stage >= config.fossilize_bonus_min_holding_epochs
        ):
            bonus = config.fossilize_bonus_base + attribution(config, seed)
        elif c < 0:
            bonus = -(config.fossilize_harm_base + config.fossilize_harm_per_point * abs(c))
        terms["fossilize"] = bonus
    if decision.op == Op.PRUNE and c is not None and c < 0:
        terms["prune"] = config.prune_harm_base + config.prune_harm_per_point * abs(c)
    return terms


def _accuracy_delta(config: RewardConfig, before: StateView, after: StateView) -> float:
    return config.accuracy_delta_weight * 100.0 * (after.val_accuracy - before.val_accuracy)


def compute_reward(
    config: RewardConfig,
    before: StateView,
    decision: Decision,
    executed: bool,
    after: StateView,
    *,
    done: bool,
    rollback: bool,
) -> tuple[float, dict[str, float]]:
    """(total, components) of one step; components sum to total."""
    components: dict[str, float] = {}
    if config.mode == "shaped":
        phi_after = 0.0 if done else potential(config, after)
        components["accuracy_delta"] = _accuracy_delta(config, before, after)
        components["pbrs"] = config.pbrs_weight * (config.pbrs_gamma * phi_after - potential(config, before))
        components["rent"] = rent(config, after)
        if executed:
            components.update(_action_terms(config, before, decision))
    elif config.mode == "simplified":
        components["accuracy_delta"] = _accuracy_delta(config, before, after)
        components["rent"] = rent(config, after)
    if done:
        if config.mode == "sparse":
            params = after.host_params + after.seed_params
            components["terminal"] = 100.0 * after.val_accuracy - config.sparse_param_weight * (
                params / config.sparse_param_scale
            )
        else:
            components["terminal"] = terminal(config, after)
    if rollback:
        components["rollback"] = -config.rollback_penalty
    return float(sum(components.values())), components


# ---------------------------------------------------------------- Shapley
def shapley_values(
    model: MorphogeneticModel, dataset: TensorDataset, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Exact Shapley value (accuracy points) of every seed in forward with alpha > 0.

    v(S) = validation accuracy with only the seeds in S on (the others' alpha
    forced to 0); all 2^n subsets are evaluated in one fused pass per batch.
    Empty when there is no such seed or more than MAX_SHAPLEY_SEEDS of them.
    """
    seeds = [s.slot_id for s in model.slots() if seed_runs_in_forward(s.stage) and s.alpha.alpha > 0.0]
    n = len(seeds)
    if n == 0 or n > MAX_SHAPLEY_SEEDS:
        return {}
    subsets = [frozenset(c) for k in range(n + 1) for c in combinations(seeds, k)]
    settings = [{sid: 0.0 for sid in seeds if sid not in subset} for subset in subsets]
    x, y = dataset.tensors
    correct = torch.zeros(len(subsets), dtype=torch.float64)
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
            predictions = model.fused_forward(xb, settings).argmax(dim=-1)
            correct += (predictions == yb.unsqueeze(0)).reshape(len(subsets), -1).sum(dim=1).double().cpu()
    value = {subset: 100.0 * float(c) / y.numel() for subset, c in zip(subsets, correct, strict=True)}
    result = {}
    for sid in seeds:
        total = 0.0
        for subset in subsets:
            if sid in subset:
                continue
            weight = math.factorial(len(subset)) * math.factorial(n - len(subset) - 1) / math.factorial(n)
            total += weight * (value[subset | {sid}] - value[subset])
        result[sid] = total
    return result
