"""The RL environment drives its run through the one epoch loop (`epoch_steps`), like `esper train`.

An episode whose actions are the heuristic's decisions must be the run `run_epochs` makes with
the heuristic: same history, same weights, same lifecycle, same decisions carried out.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import torch

from esper.contracts.actions import Op
from esper.control.decision import Decision
from esper.growth_rl import environment
from esper.growth_rl.environment import EnvConfig, GrowthEnv
from esper.telemetry import events as ev
from esper.training.config import TrainConfig
from esper.training.epoch_loop import EpochStep, LoopEnd, epoch_steps, run_epochs
from esper.training.growth_run import GrowthRun

from .test_imitation import EAGER

EPOCHS = 10
SEED = 1
TRAIN = TrainConfig(task="mnist1d-blind", max_batches_per_epoch=3, heuristic=EAGER)
# The run's own events; the environment adds its rewards, and reports WAITs without a reason.
RUN_EVENTS = (ev.EpochMetrics, ev.SeedStageChanged, ev.GateEvaluated, ev.ContributionMeasured, ev.GovernorAction)


def _comparable(events: list[ev.TelemetryEvent]) -> list[dict[str, Any]]:
    return [e.model_dump(exclude={"time"}) for e in events if isinstance(e, RUN_EVENTS)]


def _decisions(events: list[ev.TelemetryEvent]) -> list[tuple[Any, ...]]:
    return [
        (e.epoch, e.op, e.slot, e.blueprint, e.executed)
        for e in events
        if isinstance(e, ev.ControllerDecision) and e.op != Op.WAIT.name
    ]


def _same_weights(a: GrowthRun, b: GrowthRun) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_an_episode_of_heuristic_actions_is_the_run_run_epochs_makes_with_the_heuristic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_events: list[ev.TelemetryEvent] = []
    run = GrowthRun(
        TRAIN.model_copy(update={"epochs": EPOCHS, "seed": SEED, "controller": "heuristic"}), emit=run_events.append
    )
    end = run_epochs(run, run.make_controller())
    assert end.completed

    # Every epoch of the episode goes through the shared loop: the spy passes each step through.
    loops: list[tuple[GrowthRun, str]] = []
    steps: list[EpochStep] = []

    def spied(run: GrowthRun, controller: str, **options: Any) -> Generator[EpochStep, Decision, LoopEnd]:
        loops.append((run, controller))
        loop = epoch_steps(run, controller, **options)
        decision: Decision | None = None
        try:
            while True:
                step = next(loop) if decision is None else loop.send(decision)
                steps.append(step)
                decision = yield step
        except StopIteration as stop:
            end: LoopEnd = stop.value
            return end

    monkeypatch.setattr(environment, "epoch_steps", spied)
    env_events: list[ev.TelemetryEvent] = []
    env = GrowthEnv(EnvConfig(train=TRAIN, episode_length=EPOCHS, shapley=False), emit=env_events.append)
    env.reset(SEED)
    done, ops = False, []
    while not done:
        action = env.expert_action("heuristic")
        ops.append(Op(action.op))
        _, _, done, info, _ = env.step(action)

    assert env.run is not None and loops == [(env.run, "policy")] and len(steps) == EPOCHS
    assert {Op.GERMINATE, Op.ADVANCE} <= set(ops), ops  # the episode exercised the lifecycle
    assert env.run.history == run.history and env.run.epoch == run.epoch == EPOCHS
    assert _same_weights(env.run, run)
    assert env.run.model.reports() == run.model.reports()
    assert _comparable(env_events) == _comparable(run_events)
    assert _decisions(env_events) == _decisions(run_events) and _decisions(run_events)
    assert {e.controller for e in env_events if isinstance(e, ev.ControllerDecision)} == {"policy"}
    assert info["epoch"] == EPOCHS and "final_val_accuracy" in info
