"""Distributed scaling and the useful share of a PPO round.

The workloads are jobs where a step's compute dominates, as in the jobs users launch torchrun
for: DDP pays one gradient all-reduce per step whatever the step costs, so a step of a
fraction of a millisecond (the default 20k-parameter mnist1d host at batch 64) measures the
all-reduce, not the scaling. Every run is launched by `torchrun --standalone`, 1 or 2
processes, interleaved round by round so drifting load hits all of them alike.

- ddp_train_speedup: the same `esper train` run (mnist1d, host widths 128/256/256 ~ 0.5M
  parameters, global batch 512, 6 full epochs, heuristic controller that germinates at epoch 1;
  the same epochs, global batch and steps, so the same total work) on 1 process / 2 processes,
  each process with one torch thread. Times are the run's own wall clock (summary.json's
  wall_seconds): training, validation, counterfactual measurement, decisions, every epoch's
  checkpoint (written by rank 0 while the other rank waits) and the test pass. Not in it: process
  start, imports, rendezvous and data loading, which cost the same on 1 and 2 processes (both are
  torchrun launches) and do not grow with the job; `*_end_to_end` reports the whole command.
- ddp_train_speedup_vs_2_threads: the same, with the 1-process run given 2 torch threads (the
  other way to use 2 cores). The fair baseline for "does a second rank pay" is 1 process with the
  threads of one rank (one); this one says whether a second rank beats a second thread.
- ddp_ppo_speedup (and _vs_2_threads, _end_to_end): the same `esper ppo` run (mnist1d-blind,
  8 environments in the ranks' own processes, as many as a default `esper ppo`; 2 rounds of
  4-epoch episodes, 30 batches of 64 per epoch) on 1 process / 2 processes (4 environments each);
  times are the sum of the rounds' wall_seconds in the agent.
- parallel_ceiling: the machine's own limit on any 2-process speedup: a fixed number of
  forward+backward steps of the training workload's host, in 1 process vs split over 2
  independent processes that never communicate. If this is below the goal, no distributed code
  can reach it on this machine.
- ppo_env_ceiling: the same limit for the PPO workload's own environment work: its 8 environments
  stepped through one episode of WAIT actions (host training, validation, observations, the
  next episode's reset), in 1 process vs 2 independent processes of 4 environments each. The
  environments' small host models scale worse across processes than the wide host, so this
  is the ceiling ddp_ppo_speedup is to be read against.
- ppo_useful_share: in one PPO round (environments in this process), the time spent training
  the environments' host models (GrowthRun.train_epoch) over the round's wall time; the rest is
  observation/reward building, policy inference, the PPO update and overhead. Reported as a
  "speedup" (host-training ms / round ms) so the goal reads >= 0.85.

Each launch is repeated for 5 rounds (1 with --tiny or a quick plan) and the ratio reported is
the median of the per-round ratios with its interquartile range: on a 2-core virtual machine a
multi-second job's wall time moves by 20-30 % from one minute to the next, and with 3 rounds of
the earlier 3-epoch / 4-environment jobs two runs of the suite gave 1.54x and 1.69x (train),
1.85x and 1.29x (ppo). The machine's load average at the time is written into each case's
description: on a shared machine the scaling numbers move with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper.bench.timing import BenchError, BenchSettings, PairTiming, summarise

__all__ = [
    "PARALLEL_WORK",
    "SCALING_GOAL",
    "USEFUL_SHARE_GOAL",
    "ceiling_worker",
    "distributed_scaling",
    "ppo_env_ceiling_worker",
    "train_config",
]

SCALING_GOAL = 1.6
USEFUL_SHARE_GOAL = 0.85
_TIMEOUT_S = 900
# The training workload's host and global batch (the ceiling measurement uses them too).
_WIDE_HOST = [128, 256, 256]
_WIDE_BATCH = 512
_TRAIN_EPOCHS = 6
# Forward+backward steps of the ceiling measurement, split over the processes.
PARALLEL_WORK = 6


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}/{five:.2f}/{fifteen:.2f} on {os.cpu_count()} CPUs"


def _rounds(settings: BenchSettings) -> int:
    return 1 if settings.tiny or settings.plan.rounds <= 3 else 5


@dataclass(frozen=True)
class _Launch:
    """One torchrun launch: how many processes, and torch threads per process."""

    nproc: int
    threads: int

    def env(self) -> dict[str, str]:
        return {**os.environ, "OMP_NUM_THREADS": str(self.threads)}

    def command(self, *esper_args: str) -> list[str]:
        return [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={self.nproc}",
            "-m", "esper", *esper_args, "--no-progress",
        ]  # fmt: skip


ONE, ONE_TWO_THREADS, TWO = _Launch(1, 1), _Launch(1, 2), _Launch(2, 1)


def _run(launch: _Launch, args: list[str], what: str) -> float:
    """Run the command; its end-to-end wall time in ms."""
    started = time.perf_counter()
    result = subprocess.run(launch.command(*args), env=launch.env(), capture_output=True, text=True, timeout=_TIMEOUT_S)
    elapsed = (time.perf_counter() - started) * 1000.0
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"torchrun --nproc-per-node {launch.nproc} esper {what} failed: {tail[0]}")
    return elapsed


def train_config(tiny: bool, threads: int) -> dict[str, Any]:
    if tiny:
        return {
            "task": "mnist1d", "controller": "heuristic", "epochs": 2, "batch_size": 64,
            "max_batches_per_epoch": 2, "seed": 0, "threads": threads,
            "heuristic": {"min_epoch_to_germinate": 1, "min_epochs_left_to_germinate": 0},
        }  # fmt: skip
    return {
        "task": "mnist1d",
        "controller": "heuristic",
        "epochs": _TRAIN_EPOCHS,
        "batch_size": _WIDE_BATCH,
        "host_overrides": {"widths": _WIDE_HOST},
        "seed": 0,
        "threads": threads,
        "heuristic": {"min_epoch_to_germinate": 1, "min_epochs_left_to_germinate": 0},
    }


_PPO_ENVS = 8  # a default `esper ppo` runs 8 environments
_PPO_TINY_ENVS = 4
PPO_BENCH_CONFIG = """envs = {envs}
rounds = 2
episode_length = {length}
workers = 0
[train]
max_batches_per_epoch = {batches}
threads = {threads}
[ppo]
n_minibatches = 2
[imitation]
rounds = 0
"""


def _ppo_envs(tiny: bool) -> int:
    return _PPO_TINY_ENVS if tiny else _PPO_ENVS


def _ppo_config(tiny: bool, threads: int) -> str:
    return PPO_BENCH_CONFIG.format(
        envs=_ppo_envs(tiny), length=2 if tiny else 4, batches=1 if tiny else 30, threads=threads
    )


class _Times:
    """Per-launch lists of (the run's own wall ms, end-to-end ms), one entry per round."""

    def __init__(self) -> None:
        self.own: dict[_Launch, list[float]] = {ONE: [], ONE_TWO_THREADS: [], TWO: []}
        self.whole: dict[_Launch, list[float]] = {ONE: [], ONE_TWO_THREADS: [], TWO: []}

    def add(self, launch: _Launch, own_ms: float, whole_ms: float) -> None:
        self.own[launch].append(own_ms)
        self.whole[launch].append(whole_ms)

    def pair(self, baseline: _Launch, whole: bool = False) -> PairTiming:
        times = self.whole if whole else self.own
        return PairTiming(ours_ms=tuple(times[TWO]), plain_ms=tuple(times[baseline]), calls=1, warmup=0, clock="wall")

    def metrics(self, prefix: str, case: str, work: str, definition: str) -> dict[str, dict[str, Any]]:
        load = _load()
        one = f"1 process x 1 thread / 2 processes x 1 thread, {work}; {load}"
        threads = f"1 process x 2 threads / 2 processes x 1 thread, {work}; {load}"
        whole = f"whole command incl. start-up, 1 / 2 processes x 1 thread, {work}; {load}"
        return {
            f"{prefix}_speedup": summarise(
                {case: (one, self.pair(ONE))},
                kind="speedup",
                goal=SCALING_GOAL,
                definition=f"{definition}: 1 process / 2 processes, one torch thread each",
            ),
            f"{prefix}_speedup_vs_2_threads": summarise(
                {case: (threads, self.pair(ONE_TWO_THREADS))},
                kind="speedup",
                goal=None,
                definition=f"{definition}: 1 process with 2 torch threads / 2 processes with 1 each",
            ),
            f"{prefix}_speedup_end_to_end": summarise(
                {case: (whole, self.pair(ONE, whole=True))},
                kind="speedup",
                goal=None,
                definition="wall time of the whole torchrun command (start, imports, rendezvous, data, run, "
                "outputs) on 1 process / on 2 processes",
            ),
        }


def _train_scaling(settings: BenchSettings) -> dict[str, dict[str, Any]]:
    times = _Times()
    with tempfile.TemporaryDirectory(prefix="esper-bench-ddp-") as tmp:
        for index in range(_rounds(settings)):
            for launch in (ONE, TWO, ONE_TWO_THREADS):
                config = Path(tmp) / f"config-{launch.threads}.json"
                config.write_text(json.dumps(train_config(settings.tiny, launch.threads)), encoding="utf-8")
                out = Path(tmp) / f"run-{launch.nproc}x{launch.threads}-{index}"
                whole = _run(launch, ["train", "--config", str(config), "--out", str(out)], "train")
                summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
                times.add(launch, float(summary["wall_seconds"]) * 1000.0, whole)
    case = "mnist1d-tiny" if settings.tiny else f"mnist1d-wide-{_TRAIN_EPOCHS}-epochs"
    work = (
        "toy run"
        if settings.tiny
        else f"mnist1d host widths {_WIDE_HOST}, global batch {_WIDE_BATCH}, {_TRAIN_EPOCHS} epochs, same total work"
    )
    return times.metrics("ddp_train", case, work, "wall time of esper train (torchrun, gloo, DDP)")


def _ppo_scaling(settings: BenchSettings) -> dict[str, dict[str, Any]]:
    from esper.growth_rl.agent_io import load_agent

    times = _Times()
    with tempfile.TemporaryDirectory(prefix="esper-bench-dppo-") as tmp:
        for index in range(_rounds(settings)):
            for launch in (ONE, TWO, ONE_TWO_THREADS):
                config = Path(tmp) / f"ppo-{launch.threads}.toml"
                config.write_text(_ppo_config(settings.tiny, launch.threads), encoding="utf-8")
                out = Path(tmp) / f"agent-{launch.nproc}x{launch.threads}-{index}"
                whole = _run(launch, ["ppo", "--config", str(config), "--out", str(out)], "ppo")
                history = load_agent(out / "agent.pt").meta.history
                times.add(launch, sum(float(h["wall_seconds"]) for h in history) * 1000.0, whole)
    envs = _ppo_envs(settings.tiny)
    case = f"mnist1d-blind-{envs}-envs"
    work = f"{envs} envs, 2 rounds" + ("" if settings.tiny else " of 4 epochs of 30 batches")
    return times.metrics("ddp_ppo", case, work, "wall time of the esper ppo rounds (torchrun, decentralised PPO)")


# ----------------------------------------------------------------- ceiling
def ceiling_worker(steps: int, tiny: bool) -> None:
    """Say 'ready', wait for a line on stdin, run `steps` forward+backward steps of the training
    workload's host, print the start and end of the work (CLOCK_MONOTONIC, comparable across
    processes)."""
    import torch

    from esper.hosts import build_host
    from esper.tasks.registry import default_tasks

    torch.set_num_threads(1)
    torch.manual_seed(0)
    task = default_tasks().get("mnist1d")
    widths, batch = ([8, 8, 8], 8) if tiny else (_WIDE_HOST, _WIDE_BATCH)
    host = build_host("cnn", {**task.host_config, "widths": widths})
    x = torch.randn(batch, 1, 40)
    host(x).sum().backward()  # first-call allocations out of the timed work
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    for _ in range(steps):
        host(x).sum().backward()
    print(f"{started} {time.monotonic()}", flush=True)


def ppo_env_ceiling_worker(offset: int, count: int, tiny: bool) -> None:
    """Say 'ready', wait for a line on stdin, step environments offset..offset+count-1 of the PPO
    workload through one episode of WAIT actions, print the start and end of the work
    (CLOCK_MONOTONIC)."""
    import torch

    from esper.contracts.actions import HEAD_INDEX
    from esper.growth_rl.training import PPORunConfig
    from esper.growth_rl.vector_env import VectorGrowthEnv

    torch.set_num_threads(1)
    config = PPORunConfig.model_validate(tomllib.loads(_ppo_config(tiny, threads=1)))
    envs = VectorGrowthEnv([config.env_config()] * count, 0, base_seed=config.seed, shard=(offset, config.envs))
    envs.reset()  # data loading and the first epoch out of the timed work, as before a PPO round
    wait = torch.zeros(count, len(HEAD_INDEX), dtype=torch.long)  # index 0 of every head: WAIT
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    for _ in range(config.episode_length):
        envs.step(wait)
    print(f"{started} {time.monotonic()}", flush=True)
    envs.close()


def _ceiling_run(processes: int, tiny: bool) -> float:
    steps = PARALLEL_WORK // processes
    code = f"from esper.bench.distributed_scaling import ceiling_worker; ceiling_worker({steps}, {tiny})"
    return _span_run([code] * processes)


def _ppo_env_ceiling_run(processes: int, tiny: bool) -> float:
    count = _ppo_envs(tiny) // processes
    return _span_run([
        f"from esper.bench.distributed_scaling import ppo_env_ceiling_worker; "
        f"ppo_env_ceiling_worker({index * count}, {count}, {tiny})"
        for index in range(processes)
    ])  # fmt: skip


def _span_run(codes: list[str]) -> float:
    """Wall ms from the first process starting its share of the work to the last one ending."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        for code in codes
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise BenchError("parallel ceiling: a worker process failed to start")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        spans = []
        for worker in workers:
            out, _ = worker.communicate(timeout=_TIMEOUT_S)
            if worker.returncode != 0:
                raise BenchError(f"parallel ceiling: a worker process exited with status {worker.returncode}")
            start, end = (float(v) for v in out.split())
            spans.append((start, end))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return (max(end for _, end in spans) - min(start for start, _ in spans)) * 1000.0


def _ceiling_pairs(settings: BenchSettings, run: Callable[[int, bool], float]) -> PairTiming:
    one: list[float] = []
    two: list[float] = []
    for _ in range(_rounds(settings)):
        one.append(run(1, settings.tiny))
        two.append(run(2, settings.tiny))
    return PairTiming(ours_ms=tuple(two), plain_ms=tuple(one), calls=1, warmup=0, clock="wall")


def _parallel_ceiling(settings: BenchSettings) -> dict[str, Any]:
    timing = _ceiling_pairs(settings, _ceiling_run)
    work = f"{PARALLEL_WORK} forward+backward steps of the training workload's host"
    return summarise(
        {"independent-processes": (f"1 process / 2 independent processes, {work}; {_load()}", timing)},
        kind="speedup",
        goal=None,
        definition="the same compute in 1 process / split over 2 processes that never communicate "
        "(the machine's ceiling for any 2-process speedup)",
    )


def _ppo_env_ceiling(settings: BenchSettings) -> dict[str, Any]:
    timing = _ceiling_pairs(settings, _ppo_env_ceiling_run)
    work = f"{_ppo_envs(settings.tiny)} envs of the ddp_ppo workload, one episode of WAIT actions"
    return summarise(
        {"independent-processes": (f"1 process / 2 independent processes, {work}; {_load()}", timing)},
        kind="speedup",
        goal=None,
        definition="the PPO workload's environment work in 1 process / split over 2 processes that never "
        "communicate (the ceiling for ddp_ppo_speedup on this machine)",
    )


# ---------------------------------------------------------- useful share
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
        **_train_scaling(settings),
        **_ppo_scaling(settings),
        "parallel_ceiling": _parallel_ceiling(settings),
        "ppo_env_ceiling": _ppo_env_ceiling(settings),
        "ppo_useful_share": _ppo_share(settings),
    }
