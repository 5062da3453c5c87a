"""One careful way to time our code against its plain-PyTorch equivalent.

`time_pair` runs both contenders in the same process, interleaved round by
round (the order flips every round so neither always runs on a warm or a
cold cache), after a warm-up, with the garbage collector off. Each sample
times `calls` back-to-back calls, calibrated so a sample lasts long enough
for the clock to resolve it. Each round gives one ours/plain ratio; the
reported ratio is the median of those per-round ratios, which is robust to
the machine getting slower or faster during the run (the two contenders of
one round see nearly the same load).

Allocator state: glibc's malloc serves large blocks with mmap until a large
block is freed, which raises its thresholds for the rest of the process.
Before that, every large tensor costs fresh page faults, so a contender
with bigger tensors (a fused batch) measured 30-40% slower or faster
depending on which benchmark ran before it. `settle_allocator` frees one
block just under glibc's 32 MiB cap first, so every pair is timed in the
steady state a long-running process reaches; other allocators ignore it.

Clocks: "wall" is elapsed time (needed when the work waits on a disk);
"cpu" is the process's CPU time, which does not count the time the process
spends preempted by other work on the machine, so it stays stable on a
busy machine. "cpu" is only meaningful with one torch thread: idle worker
threads spinning would count as work.

`summarise` turns the timed cases of one measurement into the JSON-ready
result a benchmark suite returns.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = [
    "SETTLE_BLOCK_MIB",
    "BenchError",
    "BenchSettings",
    "Clock",
    "Kind",
    "PairTiming",
    "TimingPlan",
    "settle_allocator",
    "summarise",
    "time_pair",
]

Kind = Literal["ratio", "speedup"]


class BenchError(RuntimeError):
    """A benchmark could not be set up honestly (e.g. ours and plain disagree)."""


Clock = Literal["wall", "cpu"]
_CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "cpu": time.process_time_ns}
# glibc (64-bit) raises its mmap threshold only for freed blocks of at most 32 MiB.
SETTLE_BLOCK_MIB = 31


@dataclass(frozen=True)
class TimingPlan:
    """How much to time (warm-up rounds, timed rounds, minimum length of one sample) and with which clock."""

    warmup: int
    rounds: int
    min_sample_ms: float
    clock: Clock = "wall"

    def __post_init__(self) -> None:
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"TimingPlan.warmup: expected an int >= 0, got {self.warmup!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"TimingPlan.rounds: expected an int >= 1, got {self.rounds!r}")
        sample = self.min_sample_ms
        if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 <= sample < math.inf:
            raise ValueError(f"TimingPlan.min_sample_ms: expected a finite number >= 0, got {sample!r}")
        if self.clock not in _CLOCKS:
            raise ValueError(f"TimingPlan.clock: expected one of {sorted(_CLOCKS)}, got {self.clock!r}")


@dataclass(frozen=True)
class PairTiming:
    """Per-call times in ms of both contenders, one entry per round."""

    ours_ms: tuple[float, ...]
    plain_ms: tuple[float, ...]
    calls: int
    warmup: int
    clock: Clock

    def per_round(self, kind: Kind) -> list[float]:
        """ours/plain per round ("ratio") or plain/ours ("speedup")."""
        if kind == "ratio":
            return [o / p for o, p in zip(self.ours_ms, self.plain_ms, strict=True)]
        if kind == "speedup":
            return [p / o for o, p in zip(self.ours_ms, self.plain_ms, strict=True)]
        raise ValueError(f"kind: expected 'ratio' or 'speedup', got {kind!r}")

    def summary(self, kind: Kind) -> dict[str, float | int | str]:
        values = self.per_round(kind)
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        return {
            "ours_ms": statistics.median(self.ours_ms),
            "plain_ms": statistics.median(self.plain_ms),
            kind: statistics.median(values),
            f"{kind}_q1": quartiles[0],
            f"{kind}_q3": quartiles[2],
            "rounds": len(values),
            "calls_per_sample": self.calls,
            "warmup_rounds": self.warmup,
            "clock": self.clock,
        }


def _sample_ns(fn: Callable[[], object], calls: int, clock: Callable[[], int]) -> int:
    start = clock()
    for _ in range(calls):
        fn()
    elapsed = clock() - start
    # Both clocks are monotonic; 0 would only mean a clock too coarse to time anything.
    if elapsed <= 0:
        raise BenchError(f"timer resolution too coarse: {calls} calls measured {elapsed} ns")
    return elapsed


def _calibrate(
    ours: Callable[[], object], plain: Callable[[], object], min_sample_ms: float, clock: Callable[[], int]
) -> int:
    """Calls per sample so the faster contender's sample lasts at least `min_sample_ms`."""
    if min_sample_ms == 0:
        return 1
    fastest_ns = min(min(_sample_ns(fn, 1, clock) for _ in range(3)) for fn in (ours, plain))
    return max(1, math.ceil(min_sample_ms * 1e6 / fastest_ns))


def settle_allocator() -> None:
    """Allocate and free one large block so malloc's thresholds sit at their steady-state cap."""
    block = torch.empty(SETTLE_BLOCK_MIB * 2**20, dtype=torch.uint8)
    del block


def time_pair(ours: Callable[[], object], plain: Callable[[], object], plan: TimingPlan) -> PairTiming:
    """Time `ours` against `plain`, interleaved; see the module docstring for the method."""
    for name, fn in (("ours", ours), ("plain", plain)):
        if not callable(fn):
            raise TypeError(f"time_pair: {name} must be callable, got {type(fn).__name__}")
    if not isinstance(plan, TimingPlan):
        raise TypeError(f"time_pair: plan must be a TimingPlan, got {type(plan).__name__}")
    clock = _CLOCKS[plan.clock]
    settle_allocator()
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(plan.warmup):
            ours()
            plain()
        calls = _calibrate(ours, plain, plan.min_sample_ms, clock)
        ours_ns: list[int] = []
        plain_ns: list[int] = []
        for index in range(plan.rounds):
            if index % 2 == 0:
                ours_ns.append(_sample_ns(ours, calls, clock))
                plain_ns.append(_sample_ns(plain, calls, clock))
            else:
                plain_ns.append(_sample_ns(plain, calls, clock))
                ours_ns.append(_sample_ns(ours, calls, clock))
    finally:
        if was_enabled:
            gc.enable()
    scale = 1e6 * calls
    return PairTiming(
        ours_ms=tuple(t / scale for t in ours_ns),
        plain_ms=tuple(t / scale for t in plain_ns),
        calls=calls,
        warmup=plan.warmup,
        clock=plan.clock,
    )


def summarise(
    cases: Mapping[str, tuple[str, PairTiming]],
    *,
    kind: Kind,
    goal: float | None,
    definition: str,
) -> dict[str, Any]:
    """One metric's result: every case's summary and the worst case as `value`.

    `cases` maps a case name to (description, timing). For a "ratio" (ours /
    plain) lower is better and the goal is a maximum; for a "speedup" (plain /
    ours) higher is better and the goal is a minimum.
    """
    if not cases:
        raise ValueError("summarise: expected at least one case, got none")
    if kind not in ("ratio", "speedup"):
        raise ValueError(f"summarise: kind must be 'ratio' or 'speedup', got {kind!r}")
    rows: dict[str, dict[str, Any]] = {}
    for name, (description, timing) in cases.items():
        row: dict[str, Any] = {"description": description, **timing.summary(kind)}
        row["passed"] = None if goal is None else _meets(row[kind], kind, goal)
        rows[name] = row
    values = [row[kind] for row in rows.values()]
    worst = max(values) if kind == "ratio" else min(values)
    return {
        "kind": kind,
        "definition": definition,
        "value": worst,
        "goal": goal,
        "goal_rule": "<=" if kind == "ratio" else ">=",
        "passed": None if goal is None else _meets(worst, kind, goal),
        "cases": rows,
    }


def _meets(value: float, kind: Kind, goal: float) -> bool:
    return value <= goal if kind == "ratio" else value >= goal


@dataclass(frozen=True)
class BenchSettings:
    """What every suite receives: the timing plan, and whether to use toy sizes.

    `tiny` exists for smoke tests: it shrinks models and inputs so a suite
    runs in well under a second; its numbers mean nothing.
    """

    plan: TimingPlan
    tiny: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.plan, TimingPlan):
            raise TypeError(f"BenchSettings.plan: expected a TimingPlan, got {type(self.plan).__name__}")
        if not isinstance(self.tiny, bool):
            raise TypeError(f"BenchSettings.tiny: expected a bool, got {type(self.tiny).__name__}")
