"""Runs the benchmark suites, prints their table and writes the results file.

A suite is a function `run(settings) -> {metric_name: metric}` (a metric is
what `esper.bench.timing.summarise` returns) registered in `SUITES`; adding
a suite is adding one entry. Every metric's `value` is also written at the
top level of the results document under the metric's name, so the README
and CI can read a headline number without knowing the suite layout.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console, JustifyMethod
from rich.table import Table

import esper
from esper.bench.checkpoint_cost import checkpoint_cost
from esper.bench.distributed_scaling import distributed_scaling
from esper.bench.gpt_overhead import gpt_dormant_overhead, gpt_fossilized_overhead
from esper.bench.machine import describe_machine
from esper.bench.model_overhead import dormant_overhead, fossilized_overhead, fused_counterfactual_speedup
from esper.bench.rl_throughput import rl_throughput
from esper.bench.timing import SETTLE_BLOCK_MIB, BenchSettings, Clock, TimingPlan

__all__ = [
    "FULL_PLAN",
    "QUICK_PLAN",
    "RESERVED_KEYS",
    "SUITES",
    "Suite",
    "print_table",
    "run_benchmarks",
    "suite_names",
    "write_results",
]

SuiteFunction = Callable[[BenchSettings], dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class Suite:
    name: str
    run: SuiteFunction
    summary: str


SUITES: tuple[Suite, ...] = (
    Suite("dormant_overhead", dormant_overhead, "all slots DORMANT vs the bare host, forward+backward"),
    Suite("fossilized_overhead", fossilized_overhead, "fossilized seeds vs a hand-written static module"),
    Suite("gpt_dormant_overhead", gpt_dormant_overhead, "GPT host: all slots DORMANT vs the bare host"),
    Suite(
        "gpt_fossilized_overhead",
        gpt_fossilized_overhead,
        "GPT host: fossilized lora/attention/mlp_small/norm vs a hand-written static module",
    ),
    Suite("checkpoint", checkpoint_cost, "esper.save_model / load_model vs torch.save / torch.load"),
    Suite("fused_counterfactual", fused_counterfactual_speedup, "fused_forward vs K forwards"),
    Suite("rl_throughput", rl_throughput, "K vectorised growth environments vs K separate runs"),
    Suite(
        "distributed",
        distributed_scaling,
        "esper train and ppo on 2 processes vs 1 (torchrun), the machine's 2-process ceiling, useful share of PPO",
    ),
)

# Many short rounds: a per-round ratio median needs many rounds to be precise.
FULL_PLAN = TimingPlan(warmup=5, rounds=151, min_sample_ms=10.0)
QUICK_PLAN = TimingPlan(warmup=1, rounds=3, min_sample_ms=0.0)
RESERVED_KEYS = frozenset({"machine", "created_at", "esper_version", "settings", "results"})
# Every suite builds its models from this seed, so runs compare like with like.
MODEL_SEED = 0


def suite_names(suites: Sequence[Suite] = SUITES) -> list[str]:
    return [suite.name for suite in suites]


def _choose(names: Sequence[str] | None, suites: Sequence[Suite]) -> list[Suite]:
    if names is None:
        return list(suites)
    by_name = {suite.name: suite for suite in suites}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; available: {', '.join(by_name)}")
    return [by_name[name] for name in dict.fromkeys(names)]  # in the order given, once each


def _check_metrics(suite: str, metrics: object, seen: set[str]) -> dict[str, dict[str, Any]]:
    if not isinstance(metrics, dict) or not metrics:
        raise TypeError(f"suite {suite}: expected a non-empty dict of metrics, got {metrics!r}")
    for name, metric in metrics.items():
        if not isinstance(name, str) or name in RESERVED_KEYS or name in seen:
            raise ValueError(f"suite {suite}: metric name {name!r} is reserved, repeated or not a string")
        if not isinstance(metric, dict) or "value" not in metric or "cases" not in metric:
            raise TypeError(f"suite {suite}: metric {name!r} must be a dict with 'value' and 'cases'")
        value = metric["value"]
        if not isinstance(value, float) or not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"suite {suite}: metric {name!r} value must be a positive finite float, got {value!r}"
            )
        seen.add(name)
    return metrics


def run_benchmarks(
    names: Sequence[str] | None = None,
    *,
    quick: bool = False,
    tiny: bool = False,
    threads: int = 1,
    clock: Clock = "cpu",
    progress: Callable[[str], None] | None = None,
    suites: Sequence[Suite] = SUITES,
) -> dict[str, Any]:
    """Run the named suites (all by default) and return the results document.

    torch's thread count is set to `threads` for the run and restored after;
    the global RNG is left as it was.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected an int >= 1, got {threads!r}")
    if clock == "cpu" and threads != 1:
        raise ValueError(
            f"clock 'cpu' needs threads=1 (idle worker threads would count as work), got {threads}"
        )
    chosen = _choose(names, suites)
    base = QUICK_PLAN if quick else FULL_PLAN
    settings = BenchSettings(plan=TimingPlan(base.warmup, base.rounds, base.min_sample_ms, clock), tiny=tiny)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        machine = describe_machine()
        results: dict[str, dict[str, Any]] = {}
        seen: set[str] = set()
        for suite in chosen:
            if progress is not None:
                progress(f"running {suite.name}: {suite.summary}")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(MODEL_SEED)
                results[suite.name] = _check_metrics(suite.name, suite.run(settings), seen)
    finally:
        torch.set_num_threads(previous_threads)
    document: dict[str, Any] = {
        "machine": machine,
        "created_at": datetime.now(UTC).isoformat(),
        "esper_version": esper.__version__,
        "settings": {
            "suites": [suite.name for suite in chosen],
            "quick": quick,
            "tiny": tiny,
            "threads": threads,
            "plan": asdict(settings.plan),
            "model_seed": MODEL_SEED,
            "allocator_settle_mib": SETTLE_BLOCK_MIB,
        },
        "results": results,
    }
    for metrics in results.values():
        for name, metric in metrics.items():
            document[name] = metric["value"]
    return document


def write_results(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the document as JSON (creating directories); atomic, so a reader never sees half a file."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"results path {target} is a directory; give a file name")
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, target)
    return target


def _format_goal(metric: dict[str, Any]) -> str:
    return "—" if metric["goal"] is None else f"{metric['goal_rule']} {metric['goal']:.2f}"


def _format_pass(passed: bool | None) -> str:
    if passed is None:
        return "[dim]n/a[/dim]"
    return "[green]pass[/green]" if passed else "[red]FAIL[/red]"


def print_table(document: dict[str, Any], console: Console) -> None:
    machine = document["machine"]
    plan = document["settings"]["plan"]
    console.print(
        f"{machine['cpu_model']}, {machine['usable_cores']} usable cores, torch {machine['torch_version']} "
        f"with {machine['torch_threads']} thread(s), Python {machine['python_version']}, {machine['os']}"
    )
    table = Table(title=f"esper bench ({plan['rounds']} rounds, medians; clock: {plan['clock']})")
    for column in ("suite", "metric / case", "ours ms", "plain ms", "ratio", "IQR", "goal", "result"):
        justify: JustifyMethod = "left" if column in ("suite", "metric / case") else "right"
        table.add_column(column, justify=justify)
    for suite, metrics in document["results"].items():
        for name, metric in metrics.items():
            kind = metric["kind"]
            for case, row in metric["cases"].items():
                value = f"{row[kind]:.3f}" + (" (speedup)" if kind == "speedup" else "")
                spread = f"{row[kind + '_q1']:.3f}–{row[kind + '_q3']:.3f}"
                table.add_row(
                    suite,
                    f"{name} / {case}",
                    f"{row['ours_ms']:.3f}",
                    f"{row['plain_ms']:.3f}",
                    value,
                    spread,
                    _format_goal(metric),
                    _format_pass(row["passed"]),
                )
    console.print(table)
