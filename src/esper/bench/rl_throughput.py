"""RL environment throughput: what vectorised environments buy over separate runs.

- env_steps_per_second: environment steps (host epochs + actions) per second
  for K = 1, 2, 4, 8 environments in one VectorGrowthEnv (min(K, workers)
  worker processes), whole episodes with random legal actions, timed from
  start-up (spawning workers, loading data) to the last step.
- vector_env_speedup: K separate single-environment runs (each its own
  VectorGrowthEnv with one worker, run one after another) vs one run of K
  environments: total wall time of the separate runs / time of the vector run.
Both include process start-up, which separate runs pay K times.
Episodes are short (3 epochs, few batches) so the suite takes a couple of minutes.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from esper.bench.timing import BenchSettings
from esper.contracts.actions import ActionSpace
from esper.rl.environment import EnvConfig
from esper.rl.policy import RecurrentActorCritic
from esper.rl.vector_env import VectorGrowthEnv
from esper.training.config import TrainConfig

__all__ = ["SPEEDUP_GOAL", "rl_throughput", "time_vector_run"]

SPEEDUP_GOAL = 1.6
_TASK = "mnist1d-blind"


def _config(tiny: bool) -> tuple[EnvConfig, tuple[int, ...], int]:
    batches = 1 if tiny else 8
    config = EnvConfig(
        train=TrainConfig(task=_TASK, max_batches_per_epoch=batches),
        episode_length=2 if tiny else 3,
    )
    return config, ((1, 2) if tiny else (1, 2, 4, 8)), 2


def time_vector_run(config: EnvConfig, n_envs: int, n_workers: int, seed: int = 0) -> tuple[float, int]:
    """(wall seconds, env steps) of one episode in `n_envs` envs with random legal actions."""
    started = time.perf_counter()
    with VectorGrowthEnv([config] * n_envs, n_workers, base_seed=seed, event_types=frozenset()) as vec:
        obs, masks = vec.reset(0)
        assert vec.layout is not None
        torch.manual_seed(seed)
        space = ActionSpace(len(vec.layout.slot_ids), len(vec.layout.blueprints))
        policy = RecurrentActorCritic(obs.shape[1], space, hidden=16, lstm_hidden=16, head_hidden=8)
        state = policy.initial_state(n_envs)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(config.episode_length):
            out = policy.act(obs, state, masks, generator=generator)
            obs, _, _, masks = vec.step(out.actions)
            state = out.state
    return time.perf_counter() - started, n_envs * config.episode_length


def _row(description: str, ours_ms: float, plain_ms: float, passed: bool | None, **extra: Any) -> dict[str, Any]:
    """A case row in the shape the runner's table prints (one measurement: no spread)."""
    speedup = plain_ms / ours_ms
    return {
        "description": description,
        "ours_ms": ours_ms,
        "plain_ms": plain_ms,
        "speedup": speedup,
        "speedup_q1": speedup,
        "speedup_q3": speedup,
        "passed": passed,
        **extra,
    }


def rl_throughput(settings: BenchSettings) -> dict[str, Any]:
    """Suite `rl_throughput`: metrics env_steps_per_second and vector_env_speedup."""
    config, sizes, workers = _config(settings.tiny)
    cores = os.cpu_count()
    per_step_ms: dict[int, float] = {}
    vector_seconds: dict[int, float] = {}
    steps_per_second: dict[int, float] = {}
    for k in sizes:
        seconds, steps = time_vector_run(config, k, min(k, workers))
        vector_seconds[k] = seconds
        per_step_ms[k] = 1000.0 * seconds / steps
        steps_per_second[k] = steps / seconds
    rate_cases = {
        f"K={k}": _row(
            f"{k} envs on {min(k, workers)} workers: ms per env step (ours) vs K=1 (plain)",
            per_step_ms[k],
            per_step_ms[sizes[0]],
            None,
            env_steps_per_second=steps_per_second[k],
            seconds=vector_seconds[k],
        )
        for k in sizes
    }
    largest = max(sizes)
    separate = [time_vector_run(config, 1, 1, seed=s)[0] for s in range(largest)]
    speedup = sum(separate) / vector_seconds[largest]
    goal = None if settings.tiny else SPEEDUP_GOAL
    passed = None if goal is None else speedup >= goal
    definition_speedup = (
        f"time of {largest} separate single-environment runs (plain) / time of one {largest}-environment "
        f"run (ours), {workers} workers on {cores} cores, {config.episode_length}-epoch episodes"
    )
    return {
        "env_steps_per_second": {
            "kind": "speedup",
            "definition": "environment steps per second in one vectorised run, start-up included "
            "(value: the largest K; cases: per-step time vs K=1)",
            "value": steps_per_second[largest],
            "goal": None,
            "goal_rule": ">=",
            "passed": None,
            "cases": rate_cases,
        },
        "vector_env_speedup": {
            "kind": "speedup",
            "definition": definition_speedup,
            "value": speedup,
            "goal": goal,
            "goal_rule": ">=",
            "passed": passed,
            "cases": {
                f"K={largest}": _row(
                    definition_speedup,
                    1000.0 * vector_seconds[largest],
                    1000.0 * sum(separate),
                    passed,
                    separate_seconds=separate,
                )
            },
        },
    }
