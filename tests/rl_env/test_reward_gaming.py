"""Hand-built episodes: the shaped reward must not pay for keeping a cheap seed un-fossilized.

The quality run's policy planted a `norm` seed, blended it in and then kept
retargeting its alpha so it never fossilized: the old per-step attribution paid
its (inflated) solo-ablation contribution every step. These scenarios replay
that behaviour and the intended one on the reward function alone.
"""

from __future__ import annotations

from esper.contracts.actions import Op
from esper.contracts.stages import SeedStage
from esper.control.decision import Decision
from esper.growth_rl.rewards import RewardConfig, SeedView, StateView, compute_reward

SLOT = "r0c0"
LENGTH = 25
GAMMA = 0.995
HOST_PARAMS = 7000
BLEND_STEP = 5  # ADVANCE at this step moves the seed TRAINING -> BLENDING
EARLY = [Decision(Op.GERMINATE, slot=SLOT, blueprint="x"), Decision(Op.ADVANCE, slot=SLOT)] + [
    Decision(Op.WAIT)
] * 3 + [Decision(Op.ADVANCE, slot=SLOT), Decision(Op.WAIT)]
EARLY_STAGES = [SeedStage.DORMANT, SeedStage.GERMINATED] + [SeedStage.TRAINING] * 4 + [SeedStage.BLENDING]


def _stages(plan: list[Decision]) -> list[SeedStage]:
    """Stage before each step and after the last, following the plan's actions."""
    stages = [*EARLY_STAGES, SeedStage.HOLDING]
    for decision in plan[len(EARLY) :]:
        current = stages[-1]
        if decision.op == Op.SET_ALPHA_TARGET:
            stages.append(SeedStage.BLENDING)  # HOLDING -> BLENDING
        elif decision.op == Op.FOSSILIZE:
            stages.append(SeedStage.FOSSILIZED)
        elif current == SeedStage.BLENDING:
            stages.append(SeedStage.HOLDING)  # the short ramp finishes in one epoch
        else:
            stages.append(current)
    return stages


def _episode_return(
    config: RewardConfig, plan: list[Decision], contribution: float, seed_params: int, gain: float
) -> float:
    """Discounted return; the host learns 0.40 -> 0.47, the seed adds `gain` once blended in."""
    stages = _stages(plan)
    views = []
    epochs = 0
    for t, stage in enumerate(stages):
        epochs = 0 if t == 0 or stage != stages[t - 1] else epochs + 1
        measured = contribution if t > BLEND_STEP else None
        slot = SeedView(stage, epochs, measured, 20.0 if measured is not None else None)
        accuracy = 0.40 + 0.07 * t / LENGTH + (gain * min(1.0, (t - BLEND_STEP) / 4) if t > BLEND_STEP else 0.0)
        params = seed_params if stage != SeedStage.DORMANT else 0
        views.append(StateView({SLOT: slot}, accuracy, HOST_PARAMS, params))
    total = 0.0
    for t, decision in enumerate(plan):
        reward, _ = compute_reward(
            config, views[t], decision, True, views[t + 1], done=t == LENGTH - 1, rollback=False
        )
        total += GAMMA**t * reward
    return total


def _toggle_plan() -> list[Decision]:
    rest = [Decision(Op.SET_ALPHA_TARGET, slot=SLOT, alpha_target=0.7), Decision(Op.WAIT)]
    return (EARLY + rest * LENGTH)[:LENGTH]


def _fossilize_plan() -> list[Decision]:
    plan = [*EARLY, Decision(Op.WAIT), Decision(Op.FOSSILIZE, slot=SLOT)]
    return plan + [Decision(Op.WAIT)] * (LENGTH - len(plan))


def test_scenario_plans_have_the_intended_stages() -> None:
    toggle, fossil = _stages(_toggle_plan()), _stages(_fossilize_plan())
    assert len(toggle) == len(fossil) == LENGTH + 1
    assert SeedStage.FOSSILIZED not in toggle and toggle.count(SeedStage.BLENDING) > 5
    assert fossil[-1] == SeedStage.FOSSILIZED


def test_toggling_a_cheap_seed_earns_less_than_growing_and_fossilizing_a_conv_seed() -> None:
    config = RewardConfig()
    toggle = _episode_return(config, _toggle_plan(), contribution=23.0, seed_params=40, gain=0.01)
    grow = _episode_return(config, _fossilize_plan(), contribution=8.0, seed_params=1500, gain=0.15)
    assert grow > toggle + 10.0


def test_toggling_never_beats_fossilizing_the_same_seed() -> None:
    """Same seed, same accuracy path: retargeting forever is strictly worse than fossilizing."""
    config = RewardConfig()
    for contribution in (0.5, 2.0, 23.0):
        toggle = _episode_return(config, _toggle_plan(), contribution, seed_params=40, gain=0.01)
        fossil = _episode_return(config, _fossilize_plan(), contribution, seed_params=40, gain=0.01)
        assert fossil > toggle


def test_each_retarget_cycle_loses_reward() -> None:
    """A retarget-and-rehold cycle earns less than holding the seed for the same two epochs."""
    config = RewardConfig()
    held = StateView({SLOT: SeedView(SeedStage.HOLDING, 2, 23.0, 20.0)}, 0.5, HOST_PARAMS, 40)
    blended = StateView({SLOT: SeedView(SeedStage.BLENDING, 0, 23.0, 20.0)}, 0.5, HOST_PARAMS, 40)
    rehold = StateView({SLOT: SeedView(SeedStage.HOLDING, 0, 23.0, 20.0)}, 0.5, HOST_PARAMS, 40)
    held3 = StateView({SLOT: SeedView(SeedStage.HOLDING, 3, 23.0, 20.0)}, 0.5, HOST_PARAMS, 40)
    held4 = StateView({SLOT: SeedView(SeedStage.HOLDING, 4, 23.0, 20.0)}, 0.5, HOST_PARAMS, 40)
    retarget = Decision(Op.SET_ALPHA_TARGET, slot=SLOT, alpha_target=0.7)
    wait = Decision(Op.WAIT)
    step = lambda b, d, a: compute_reward(config, b, d, True, a, done=False, rollback=False)[0]  # noqa: E731
    toggled = step(held, retarget, blended) + GAMMA * step(blended, wait, rehold)
    holding = step(held, wait, held3) + GAMMA * step(held3, wait, held4)
    assert toggled < holding
