"""Compare controllers on held-out seeds: final test accuracy, parameters, accuracy per added parameter.

Each (controller, seed) pair is one full GrowthRun driven by the same loop as
`esper train` (`run_epochs`: train an epoch, decide, apply), run in worker processes when
`workers > 1`. Seeds are 10_000 + i: PPO training uses seed + round * K + k
from 0, so evaluation seeds stay out of any realistic training range.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import torch

from esper.contracts.stages import SeedStage
from esper.control.decision import TelemetryObserver
from esper.tasks import DataSplits
from esper.telemetry import events as ev
from esper.training.config import TrainConfig
from esper.training.epoch_loop import run_epochs
from esper.training.growth_run import GrowthRun

EVAL_SEED_BASE = 10_000
STATIC = "static"
# Per process: each task's data is loaded once per data source (--data-dir / --text-file).
_SPLITS: dict[tuple[str, str | None, str | None], DataSplits] = {}


def evaluation_seeds(count: int) -> list[int]:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"seeds: expected an int >= 1, got {count!r}")
    return [EVAL_SEED_BASE + i for i in range(count)]


@dataclass(frozen=True)
class EvalJob:
    controller: str
    seed: int
    task: str
    epochs: int | None
    overrides: dict[str, Any] = field(default_factory=dict)


def run_job(job: EvalJob) -> dict[str, Any]:
    """One run of one controller on one seed; returns its final numbers."""
    config = TrainConfig.model_validate(
        {**job.overrides, "task": job.task, "seed": job.seed, "epochs": job.epochs, "controller": job.controller}
    )
    started = time.perf_counter()
    forward: list[Callable[[ev.TelemetryEvent], None]] = []

    def emit(event: ev.TelemetryEvent) -> None:
        for listener in forward:
            listener(event)

    source = (config.task, config.data_dir, config.text_file)
    run = GrowthRun(config, emit=emit, splits=_SPLITS.get(source))
    _SPLITS[source] = run.splits
    controller = run.make_controller()
    if isinstance(controller, TelemetryObserver):
        forward.append(controller.observe)
    end = run_epochs(run, controller)
    _, test_accuracy = run.test()
    counts = run.model.param_counts()
    fossilized = sum(1 for s in run.model.slots() if s.stage == SeedStage.FOSSILIZED)
    return {
        "controller": job.controller,
        "seed": job.seed,
        "test_accuracy": test_accuracy,
        "val_accuracy": run.history["val_accuracy"][-1],
        "total_params": counts.total,
        "seed_params": counts.seeds,
        "host_params": counts.host,
        "fossilized": fossilized,
        "epochs": run.epoch,
        "aborted": end.aborted,
        "wall_seconds": time.perf_counter() - started,
    }


def _init_worker() -> None:
    torch.set_num_threads(1)


def run_jobs(jobs: Sequence[EvalJob], workers: int) -> list[dict[str, Any]]:
    """Results in job order; `workers` > 1 runs them in spawned processes (one torch thread each)."""
    if workers <= 1:
        return [run_job(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        return list(pool.map(run_job, jobs))


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarize_runs(runs: Sequence[dict[str, Any]], controllers: Sequence[str]) -> list[dict[str, Any]]:
    """One row per controller (in the given order), with gains measured against `static` if it ran."""
    rows: list[dict[str, Any]] = []
    for name in controllers:
        mine = [r for r in runs if r["controller"] == name]
        if not mine:
            raise ValueError(f"evaluate: no runs for controller {name!r}")
        accuracies = [float(r["test_accuracy"]) for r in mine]
        rows.append(
            {
                "controller": name,
                "runs": len(mine),
                "seeds": [r["seed"] for r in mine],
                "test_accuracy_mean": _mean(accuracies),
                "test_accuracy_std": _std(accuracies),
                "test_accuracy_min": min(accuracies),
                "test_accuracy_max": max(accuracies),
                "test_accuracies": accuracies,
                "total_params_mean": _mean([float(r["total_params"]) for r in mine]),
                "seed_params_mean": _mean([float(r["seed_params"]) for r in mine]),
                "fossilized_mean": _mean([float(r["fossilized"]) for r in mine]),
                "aborted_runs": sum(1 for r in mine if r["aborted"]),
                "wall_seconds_mean": _mean([float(r["wall_seconds"]) for r in mine]),
                "accuracy_gain_points_vs_static": None,
                "accuracy_gain_per_kparam": None,
            }
        )
    static = next((row for row in rows if row["controller"] == STATIC), None)
    if static is not None:
        for row in rows:
            gain = 100.0 * (row["test_accuracy_mean"] - static["test_accuracy_mean"])
            row["accuracy_gain_points_vs_static"] = gain
            added = row["total_params_mean"] - static["total_params_mean"]
            row["accuracy_gain_per_kparam"] = gain / (added / 1000.0) if added > 0 else None
    return rows


def evaluate_controllers(
    task: str,
    controllers: Sequence[str],
    seeds: Sequence[int],
    *,
    epochs: int | None = None,
    workers: int = 1,
    overrides: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows per controller, every run). Jobs run controller-major, seed-minor."""
    if not controllers:
        raise ValueError("evaluate: expected at least one controller")
    if len(set(controllers)) != len(controllers):
        raise ValueError(f"evaluate: controllers must be unique, got {list(controllers)}")
    jobs = [EvalJob(c, s, task, epochs, dict(overrides or {})) for c in controllers for s in seeds]
    runs = run_jobs(jobs, workers)
    return summarize_runs(runs, controllers), runs


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the rows (accuracy in %)."""
    header = ("controller", "test acc % (mean ± std)", "min–max %", "params", "+pts vs static", "pts / k added")
    lines = []
    for row in rows:
        gain = row["accuracy_gain_points_vs_static"]
        per_k = row["accuracy_gain_per_kparam"]
        lines.append(
            (
                row["controller"],
                f"{100 * row['test_accuracy_mean']:.2f} ± {100 * row['test_accuracy_std']:.2f}",
                f"{100 * row['test_accuracy_min']:.1f}–{100 * row['test_accuracy_max']:.1f}",
                f"{row['total_params_mean']:,.0f}",
                "—" if gain is None else f"{gain:+.2f}",
                "—" if per_k is None or not math.isfinite(per_k) else f"{per_k:+.3f}",
            )
        )
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    render = [" | ".join(str(cell).ljust(w) for cell, w in zip(r, widths, strict=True)) for r in [header, *lines]]
    render.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(render)
