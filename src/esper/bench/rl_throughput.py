"""RL environment throughput: what vectorised environments buy over separate runs.

Each run is one episode of random legal actions in a VectorGrowthEnv of K
environments on min(K, workers) worker processes; it is timed twice: whole
(start-up: spawning workers, importing torch, loading data; then stepping)
and stepping only (after the first reset).
- env_steps_per_second: environment steps (host epoch + action) per second
  while stepping, for K = 1, 2, 4, 8 (cases: ms per step vs K = 1).
- vector_env_speedup: K separate single-environment runs, one after another,
  vs one run of K environments, whole runs (separate runs pay start-up K times).
- vector_env_step_speedup: the same ratio for stepping only: what the
  parallel workers alone buy (at most the number of cores).
Episodes are short (3 epochs of 20 batches) so the suite takes a couple of minutes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from esper.bench.timing import BenchSettings
from esper.contracts.actions import ActionSpace
from esper.growth_rl.environment import EnvConfig
from esper.growth_rl.vector_env import VectorGrowthEnv
from esper.rl.policy import RecurrentActorCritic
from esper.training.config import TrainConfig

__all__ = ["SPEEDUP_GOAL", "RunTiming", "rl_throughput", "time_vector_run"]

SPEEDUP_GOAL = 1.6
_TASK = "mnist1d-blind"


def _config(tiny: bool) -> tuple[EnvConfig, tuple[int, ...], int]:
    """(env config, K values, workers); tiny runs in this process (no workers) for smoke tests."""
    batches = 1 if tiny else 20
    config = EnvConfig(
        train=TrainConfig(task=_TASK, max_batches_per_epoch=batches),
        episode_length=2 if tiny else 3,
    )
    return config, ((1, 2) if tiny else (1, 2, 4, 8)), (0 if tiny else 2)


@dataclass(frozen=True)
class RunTiming:
    total_seconds: float  # start-up + stepping
    step_seconds: float  # stepping only
    env_steps: int


def time_vector_run(config: EnvConfig, n_envs: int, n_workers: int, seed: int = 0) -> RunTiming:
    """Time one episode in `n_envs` envs with random legal actions."""
    started = time.perf_counter()
    with VectorGrowthEnv([config] * n_envs, n_workers, base_seed=seed, event_types=frozenset()) as vec:
        obs, masks = vec.reset(0)
        assert vec.layout is not None
        torch.manual_seed(seed)
        space = ActionSpace(len(vec.layout.slot_ids), len(vec.layout.blueprints))
        policy = RecurrentActorCritic(obs.shape[1], space, hidden=16, lstm_hidden=16, head_hidden=8)
        state = policy.initial_state(n_envs)
        generator = torch.Generator().manual_seed(seed)
        stepping = time.perf_counter()
        for _ in range(config.episode_length):
            out = policy.act(obs, state, masks, generator=generator)
            obs, _, _, masks = vec.step(out.actions)
            state = out.state
        finished = time.perf_counter()
    return RunTiming(finished - started, finished - stepping, n_envs * config.episode_length)


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
    """Suite `rl_throughput`: env_steps_per_second, vector_env_speedup, vector_env_step_speedup."""
    config, sizes, workers = _config(settings.tiny)
    cores = os.cpu_count()
    runs = {k: time_vector_run(config, k, min(k, workers)) for k in sizes}
    per_step_ms = {k: 1000.0 * run.step_seconds / run.env_steps for k, run in runs.items()}
    rate_cases = {
        f"K={k}": _row(
            f"{k} envs on {min(k, workers)} workers: ms per env step while stepping (ours) vs K=1 (plain)",
            per_step_ms[k],
            per_step_ms[sizes[0]],
            None,
            env_steps_per_second=run.env_steps / run.step_seconds,
            step_seconds=run.step_seconds,
            total_seconds=run.total_seconds,
        )
        for k, run in runs.items()
    }
    largest = max(sizes)
    vector = runs[largest]
    separate = [time_vector_run(config, 1, min(1, workers), seed=s) for s in range(largest)]
    separate_total = sum(run.total_seconds for run in separate)
    separate_steps = sum(run.step_seconds for run in separate)
    goal = None if settings.tiny else SPEEDUP_GOAL
    whole = separate_total / vector.total_seconds
    passed = None if goal is None else whole >= goal
    setting = f"{workers} workers on {cores} cores, {config.episode_length}-epoch episodes"
    whole_definition = (
        f"time of {largest} separate single-environment runs (plain) / time of one {largest}-environment "
        f"run (ours), start-up included; {setting}"
    )
    step_definition = f"the same ratio for stepping only (start-up excluded); {setting}"
    return {
        "env_steps_per_second": {
            "kind": "speedup",
            "definition": f"environment steps per second while stepping, K = {largest} (cases: per-step time "
            "vs K = 1)",
            "value": runs[largest].env_steps / runs[largest].step_seconds,
            "goal": None,
            "goal_rule": ">=",
            "passed": None,
            "cases": rate_cases,
        },
        "vector_env_speedup": {
            "kind": "speedup",
            "definition": whole_definition,
            "value": whole,
            "goal": goal,
            "goal_rule": ">=",
            "passed": passed,
            "cases": {
                f"K={largest}": _row(
                    whole_definition,
                    1000.0 * vector.total_seconds,
                    1000.0 * separate_total,
                    passed,
                    separate_seconds=[run.total_seconds for run in separate],
                )
            },
        },
        "vector_env_step_speedup": {
            "kind": "speedup",
            "definition": step_definition,
            "value": separate_steps / vector.step_seconds,
            "goal": None,
            "goal_rule": ">=",
            "passed": None,
            "cases": {
                f"K={largest}": _row(
                    step_definition,
                    1000.0 * vector.step_seconds,
                    1000.0 * separate_steps,
                    None,
                    separate_seconds=[run.step_seconds for run in separate],
                )
            },
        },
    }
