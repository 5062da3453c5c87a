"""Distributed scaling and the useful share of a PPO round.

- ddp_train_speedup: the same `esper train` run (same config: same epochs, global batch and
  batches per epoch, so the same total work) under `torchrun --nproc-per-node 2` vs
  `--nproc-per-node 1`, interleaved; times are the runs' own wall clock (summary.json's
  wall_seconds: training, validation, decisions, checkpoints; not process start-up).
- ddp_ppo_speedup: the same `esper ppo` run (4 environments in the ranks' own processes, the
  same rounds) under `torchrun --nproc-per-node 2` (2 environments per rank) vs 1; times are the
  sum of the rounds' wall_seconds recorded in the agent (rollout + update; not start-up).
- ppo_useful_share: in one PPO round (environments in this process), the time spent training
  the environments' host models (GrowthRun.train_epoch) over the round's wall time; the rest is
  observation/reward building, policy inference, the PPO update and overhead. Reported as a
  "speedup" (host-training ms / round ms) so the goal reads >= 0.85.

The machine's load average at the time is written into each case's description: on a shared
machine the scaling numbers move with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from esper.bench.timing import BenchError, BenchSettings, PairTiming, summarise

__all__ = ["SCALING_GOAL", "USEFUL_SHARE_GOAL", "distributed_scaling"]

SCALING_GOAL = 1.6
USEFUL_SHARE_GOAL = 0.85


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}/{five:.2f}/{fifteen:.2f} on {os.cpu_count()} CPUs"


def _train_config(tiny: bool) -> dict[str, Any]:
    return {
        "task": "mnist1d",
        "controller": "heuristic",
        "epochs": 2 if tiny else 6,
        "batch_size": 64,
        "max_batches_per_epoch": 2 if tiny else None,
        "seed": 0,
        "heuristic": {"min_epoch_to_germinate": 1, "min_epochs_left_to_germinate": 0},
    }


def _torchrun_train(nproc: int, config: Path, out: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "esper", "train", "--config", str(config), "--out", str(out), "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"torchrun --nproc-per-node {nproc} esper train failed: {tail[0]}")
    return float(json.loads((out / "summary.json").read_text(encoding="utf-8"))["wall_seconds"]) * 1000.0


def _train_scaling(settings: BenchSettings) -> dict[str, Any]:
    rounds = 1 if settings.tiny or settings.plan.rounds <= 3 else 3
    one: list[float] = []
    two: list[float] = []
    with tempfile.TemporaryDirectory(prefix="esper-bench-ddp-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(_train_config(settings.tiny)), encoding="utf-8")
        for index in range(rounds):  # interleaved, so drifting load hits both alike
            one.append(_torchrun_train(1, config, Path(tmp) / f"one-{index}"))
            two.append(_torchrun_train(2, config, Path(tmp) / f"two-{index}"))
    timing = PairTiming(ours_ms=tuple(two), plain_ms=tuple(one), calls=1, warmup=0, clock="wall")
    return summarise(
        {"mnist1d-6-epochs": (f"1 process / 2 processes, same total work; {_load()}", timing)},
        kind="speedup",
        goal=SCALING_GOAL,
        definition="wall time of esper train on 1 process / on 2 processes (torchrun, gloo, DDP)",
    )


PPO_BENCH_CONFIG = """envs = 4
rounds = {rounds}
episode_length = {length}
workers = 0
[train]
max_batches_per_epoch = {batches}
[ppo]
n_minibatches = 2
[imitation]
rounds = 0
"""


def _torchrun_ppo(nproc: int, config: Path, out: Path) -> float:
    from esper.growth_rl.agent_io import load_agent

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "esper", "ppo", "--config", str(config), "--out", str(out), "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"torchrun --nproc-per-node {nproc} esper ppo failed: {tail[0]}")
    history = load_agent(out / "agent.pt").meta.history
    return sum(float(h["wall_seconds"]) for h in history) * 1000.0


def _ppo_scaling(settings: BenchSettings) -> dict[str, Any]:
    rounds = 1 if settings.tiny or settings.plan.rounds <= 3 else 3
    one: list[float] = []
    two: list[float] = []
    with tempfile.TemporaryDirectory(prefix="esper-bench-dppo-") as tmp:
        config = Path(tmp) / "ppo.toml"
        text = PPO_BENCH_CONFIG.format(
            rounds=1 if settings.tiny else 2, length=2 if settings.tiny else 5, batches=1 if settings.tiny else 20
        )
        config.write_text(text, encoding="utf-8")
        for index in range(rounds):
            one.append(_torchrun_ppo(1, config, Path(tmp) / f"one-{index}"))
            two.append(_torchrun_ppo(2, config, Path(tmp) / f"two-{index}"))
    timing = PairTiming(ours_ms=tuple(two), plain_ms=tuple(one), calls=1, warmup=0, clock="wall")
    return summarise(
        {"mnist1d-blind-4-envs": (f"1 process / 2 processes, same envs and rounds; {_load()}", timing)},
        kind="speedup",
        goal=SCALING_GOAL,
        definition="wall time of esper ppo rounds on 1 process / on 2 processes (torchrun, decentralised PPO)",
    )


@contextmanager
def _timed_host_training(total: list[float]) -> Iterator[None]:
    from esper.training.growth_run import GrowthRun

    original = GrowthRun.train_epoch

    def timed(self: GrowthRun) -> Any:
        started = time.perf_counter()
        try:
            return original(self)
        finally:
            total[0] += time.perf_counter() - started

    GrowthRun.train_epoch = timed  # type: ignore[method-assign]  # timed for this benchmark only, restored below
    try:
        yield
    finally:
        GrowthRun.train_epoch = original  # type: ignore[method-assign]  # restores the method


def _ppo_share(settings: BenchSettings) -> dict[str, Any]:
    from esper.growth_rl.training import PPORunConfig, train_ppo
    from esper.rl.ppo import PPOConfig
    from esper.training.config import TrainConfig

    batches = 1 if settings.tiny else 20
    config = PPORunConfig(
        task="mnist1d-blind",
        envs=2,
        rounds=2,
        episode_length=2 if settings.tiny else 6,
        workers=0,
        train=TrainConfig(task="mnist1d-blind", max_batches_per_epoch=batches),
        ppo=PPOConfig(n_minibatches=1),
    )
    rounds: list[float] = []
    host: list[float] = []
    with tempfile.TemporaryDirectory(prefix="esper-bench-ppo-") as tmp:
        spent = [0.0]

        def on_round(stats: Any) -> None:
            rounds.append(stats.wall_seconds * 1000.0)
            host.append(spent[0] * 1000.0)
            spent[0] = 0.0

        with _timed_host_training(spent):
            train_ppo(config, Path(tmp), on_round=on_round)
    # The first round includes the environments' first resets; the later ones are steady state.
    timing = PairTiming(ours_ms=tuple(rounds[1:]), plain_ms=tuple(host[1:]), calls=1, warmup=1, clock="wall")
    return summarise(
        {"mnist1d-blind-2-envs": (f"host-training ms / PPO round ms, envs in process; {_load()}", timing)},
        kind="speedup",
        goal=USEFUL_SHARE_GOAL,
        definition="share of a PPO round spent training the environments' host models (>= goal is good)",
    )


def distributed_scaling(settings: BenchSettings) -> dict[str, dict[str, Any]]:
    return {
        "ddp_train_speedup": _train_scaling(settings),
        "ddp_ppo_speedup": _ppo_scaling(settings),
        "ppo_useful_share": _ppo_share(settings),
    }
