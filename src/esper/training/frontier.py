"""`esper frontier`: test metric against parameters, static hosts vs growth from each of them.

For one task, the static host is trained at each width multiplier (every
width of the host scaled by one factor, as `esper compare` widens), and
growth is started from each of those hosts with each growth controller, for
N seeds. Every run is one `run_training` call in its own fresh directory
OUT/runs/NAME, run in spawned worker processes (one torch thread each).

Training FLOPs are counted, not estimated from parameters: the forward pass
of the model on one training batch runs under torch's FlopCounterMode (which
counts matrix multiplications and convolutions), is divided by the batch size
and multiplied by 3 (forward + backward, the backward pass costing about twice
the forward) and by the training examples seen (examples per epoch x epochs).
Validation, counterfactual measurements and optimizer steps are not counted.
A run in which a seed was germinated changed its cost during training: each
seed's module is counted the same way (its forward FLOPs per example at its
slot) for every epoch in which it ran in the forward pass (from the epoch after
it entered TRAINING to the epoch it was pruned, or to the end), read from the
run's events.

Growth runs may take their own settings (`growth_config`: the heuristic's
thresholds, the blueprint list, the seed limits); static runs never germinate,
so those settings would not change them. Extra static-only widths
(`static_widths`) put static hosts on the frontier where no growth starts,
for example one as large as a grown model.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from esper.contracts.validation import describe_validation_error
from esper.hosts import build_host
from esper.model import MorphogeneticModel
from esper.tasks import DataSplits, Task, TaskOptions
from esper.telemetry.replay import read_events
from esper.training.config import TrainConfig
from esper.training.frontier_flops import forward_flops, seed_forward_epochs, seed_forward_flops, slot_inputs
from esper.training.frontier_groups import STATIC, metric_name, summarize_groups
from esper.training.plan import lookup_task, resolve_plan
from esper.training.run_io import load_run
from esper.training.trainer import CHECKPOINT_NAME, EVENTS_NAME, SUMMARY_NAME, run_training, versions
from esper.training.widening import scaled_overrides

FORMAT = "esper-frontier/1"
RUNS_DIR = "runs"
# Forward + backward: the backward pass of a matmul or convolution costs two forward passes.
FWD_BWD_FACTOR = 3
FLOPS_NOTE = (
    "training_flops = 3 x forward FLOPs per example (torch FlopCounterMode on one training batch: "
    "matmuls and convolutions) x training examples seen; validation, counterfactual measurement and "
    "optimizer steps not counted; a seed's module adds its own forward FLOPs per example (at its slot) "
    "x 3 x the examples of every epoch in which it ran in the forward pass (after entering TRAINING, "
    "until pruned or to the end)"
)
# The TrainConfig fields a growth config may set: how growth decides and how far it may go, and
# the seed lifecycle's rules (`gates`: a static run has no seed, so they cannot favour growth).
# Anything else (learning rates, epochs, the host) would make the comparison with static unfair.
GROWTH_CONFIG_KEYS = ("heuristic", "blueprints", "max_seeds", "seed_budget_ratio", "gates")
# A variant (a named set of growth settings) is a group of runs of this controller.
VARIANT_CONTROLLER = "heuristic"


class FrontierRunError(RuntimeError):
    """One run of the frontier failed; the message names it."""


@dataclass(frozen=True)
class FrontierSpec:
    """What to train: validated by `plan` before anything touches the disk."""

    task: str
    widths: tuple[float, ...]
    seeds: tuple[int, ...]
    controllers: tuple[str, ...]  # growth controllers; the static host always runs
    epochs: int | None = None
    max_batches_per_epoch: int | None = None
    text_file: str | None = None
    data_dir: str | None = None
    # Widths trained only as static hosts (more points on the frontier, no growth from them).
    static_widths: tuple[float, ...] = ()
    # Settings of the growth runs (keys in GROWTH_CONFIG_KEYS), as read from --growth-config.
    growth_config: dict[str, Any] = field(default_factory=dict)
    # Extra growth groups: label -> settings (GROWTH_CONFIG_KEYS) for the heuristic, applied over
    # growth_config. Each label is also a controller name in `controllers`.
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Keep a run whose directory already holds a completed run with the same configuration.
    keep_finished: bool = False

    def trained_by(self, label: str) -> str:
        """The controller that trains the runs of group `label` (a variant is the heuristic)."""
        return VARIANT_CONTROLLER if label in self.variants else label

    def settings_for(self, label: str) -> dict[str, Any]:
        """The growth settings of group `label` (none for the static host)."""
        if label == STATIC:
            return {}
        return {**self.growth_config, **self.variants.get(label, {})}

    def all_widths(self) -> tuple[float, ...]:
        return tuple(sorted((*self.widths, *self.static_widths)))

    def controllers_at(self, width: float) -> tuple[str, ...]:
        """The static host, then the growth controllers unless `width` is static-only."""
        return (STATIC,) if width in self.static_widths else (STATIC, *self.controllers)

    def train_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for key in ("max_batches_per_epoch", "text_file", "data_dir"):
            value = getattr(self, key)
            if value is not None:
                extra[key] = value
        return extra


@dataclass(frozen=True)
class FrontierJob:
    task: str
    width: float
    host_overrides: dict[str, Any]
    controller: str  # the group's label: a controller name or a variant's label
    seed: int
    epochs: int | None
    run_dir: str
    extra: dict[str, Any] = field(default_factory=dict)
    trained_by: str = ""  # the controller that trains it ("" = `controller`)
    keep_finished: bool = False

    @property
    def label(self) -> str:
        return f"width {self.width:g} · {self.controller} · seed {self.seed}"


def run_name(width: float, controller: str, seed: int) -> str:
    return f"w{width:g}-{controller}-s{seed}"


def width_overrides(task: Task, widths: Sequence[float]) -> dict[float, dict[str, Any]]:
    """Host overrides per width multiplier; two multipliers giving the same host are an error."""
    result: dict[float, dict[str, Any]] = {}
    for width in widths:
        overrides = scaled_overrides(task.host_config, width)
        for other, seen in result.items():
            if seen == overrides:
                raise ValueError(
                    f"--widths: {other:g} and {width:g} give the same {task.name} host "
                    f"({overrides or 'the default host'}); use multipliers further apart"
                )
        result[width] = overrides
    return result


def check_growth_config(values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` if it only holds growth settings that TrainConfig and the heuristic accept; else ValueError."""
    from esper.control.heuristic import HeuristicConfig

    unknown = sorted(set(values) - set(GROWTH_CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"{source}: {', '.join(repr(k) for k in unknown)} cannot be set for growth runs only; "
            f"allowed: {', '.join(GROWTH_CONFIG_KEYS)}"
        )
    try:
        config = TrainConfig.model_validate(values)
    except ValidationError as error:
        raise ValueError(f"{source}: {describe_validation_error(TrainConfig, error)}") from None
    try:
        HeuristicConfig.model_validate(config.heuristic)
    except ValidationError as error:
        raise ValueError(f"{source}: [heuristic] {describe_validation_error(HeuristicConfig, error)}") from None
    return values


def load_splits(spec: FrontierSpec) -> DataSplits:
    """The task's data, as every run will load it (raises ValueError/OSError if it cannot be)."""
    options = TaskOptions(
        data_dir=Path(spec.data_dir) if spec.data_dir else None,
        text_file=Path(spec.text_file) if spec.text_file else None,
    )
    return lookup_task(spec.task).load_data(options)


def plan(spec: FrontierSpec, out_dir: Path) -> list[FrontierJob]:
    """Every run, widest hosts first (the longest jobs start early, so the workers finish together)."""
    task = lookup_task(spec.task)
    overrides = width_overrides(task, spec.all_widths())
    jobs = []
    for width in sorted(spec.all_widths(), reverse=True):
        for controller in spec.controllers_at(width):
            for seed in spec.seeds:
                jobs.append(
                    FrontierJob(
                        task=spec.task,
                        width=width,
                        host_overrides=overrides[width],
                        controller=controller,
                        seed=seed,
                        epochs=spec.epochs,
                        run_dir=str(out_dir / RUNS_DIR / run_name(width, controller, seed)),
                        extra={**spec.train_extra(), **spec.settings_for(controller)},
                        trained_by=spec.trained_by(controller),
                        keep_finished=spec.keep_finished,
                    )
                )
    return jobs


# ------------------------------------------------------------------ one run (in a worker)
_SPLITS: dict[tuple[str, str | None, str | None], DataSplits] = {}  # per process: data loaded once


def finished_summary(run_dir: Path, config: TrainConfig, epochs: int) -> dict[str, Any] | None:
    """The summary of a completed run of exactly `config` (and `epochs`) in `run_dir`, else None."""
    path = run_dir / SUMMARY_NAME
    if not path.is_file() or not (run_dir / CHECKPOINT_NAME).is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # not a summary this code wrote: train the run afresh
    same = (
        isinstance(summary, dict)
        and summary.get("finish_reason") == "completed"
        and summary.get("config") == config.model_dump(mode="json")
        and summary.get("epochs") == epochs
    )
    return summary if same else None


def _worker_splits(job: FrontierJob) -> DataSplits:
    key = (job.task, job.extra.get("text_file"), job.extra.get("data_dir"))
    if key not in _SPLITS:
        text_file, data_dir = key[1], key[2]
        options = TaskOptions(
            data_dir=Path(data_dir) if data_dir else None, text_file=Path(text_file) if text_file else None
        )
        _SPLITS[key] = lookup_task(job.task).load_data(options)
    return _SPLITS[key]


def run_job(job: FrontierJob) -> dict[str, Any]:
    """Train one run into its own fresh directory; returns its record for frontier.json."""
    config = TrainConfig.model_validate(
        {
            **job.extra,
            "task": job.task,
            "controller": job.trained_by or job.controller,
            "seed": job.seed,
            "epochs": job.epochs,
            "host_overrides": job.host_overrides,
        }
    )
    run_dir = Path(job.run_dir)
    task = lookup_task(job.task)
    summary = finished_summary(run_dir, config, job.epochs or task.defaults.epochs) if job.keep_finished else None
    if summary is None:
        if run_dir.exists():
            # Only reachable under --overwrite (the command refuses a non-empty OUT otherwise):
            # each run starts in a fresh directory, never among an older run's files.
            shutil.rmtree(run_dir)
        summary = run_training(config, out_dir=run_dir)
    splits = _worker_splits(job)
    run_plan = resolve_plan(config).sized_for(splits.num_classes)
    batch_size = run_plan.batch_size
    max_batches = run_plan.max_batches_per_epoch
    batch = splits.train.tensors[0][:batch_size]
    host = MorphogeneticModel(build_host(run_plan.host.kind, dict(run_plan.host.config)))
    host_flops = forward_flops(host, batch) / len(batch)
    final_model = load_run(run_dir / CHECKPOINT_NAME).model
    final_flops = forward_flops(final_model, batch) / len(batch)
    counts = final_model.param_counts()
    examples_per_epoch = len(splits.train) if max_batches is None else min(len(splits.train), max_batches * batch_size)
    examples_seen = examples_per_epoch * int(summary["epochs"])
    host_training_flops = FWD_BWD_FACTOR * host_flops * examples_seen
    inputs = slot_inputs(host, batch)
    seed_flops = 0.0
    for slot_id, blueprint, ran in seed_forward_epochs(read_events(run_dir / EVENTS_NAME), int(summary["epochs"])):
        per_example = seed_forward_flops(host, inputs, slot_id, blueprint) / len(batch)
        seed_flops += FWD_BWD_FACTOR * per_example * examples_per_epoch * ran
    germinated = len(summary["seeds"])
    fossilized = sum(1 for s in summary["seeds"] if s["outcome"] == "fossilized")
    record: dict[str, Any] = {
        "task": job.task,
        "width": job.width,
        "host_overrides": job.host_overrides,
        "controller": job.controller,
        "seed": job.seed,
        "run_dir": job.run_dir,
        "epochs": summary["epochs"],
        "finish_reason": summary["finish_reason"],
        # Counted on the model that was tested: the last epoch's metrics are taken before the
        # controller's final decision, which may still germinate or prune a seed.
        "host_params": counts.host,
        "seed_params": counts.seeds,
        "total_params": counts.total,
        "seeds_germinated": germinated,
        "seeds_fossilized": fossilized,
        "seed_blueprints": [f"{s['slot']}:{s['blueprint']}:{s['outcome']}" for s in summary["seeds"]],
        "test_accuracy": summary["test_accuracy"],
        "test_loss": summary["test_loss"],
        "wall_seconds": summary["wall_seconds"],
        "examples_seen": examples_seen,
        "forward_flops_per_example_host": host_flops,
        "forward_flops_per_example_final": final_flops,
        "host_training_flops": host_training_flops,
        "training_flops": host_training_flops + seed_flops,
    }
    if splits.kind == "language_model":
        record["bits_per_char"] = summary["test_loss"] / math.log(2)
    return record


def _init_worker() -> None:
    # The parent stops the workers on Ctrl-C; a worker ignoring SIGINT never prints a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


# ------------------------------------------------------------------ the pool
def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel queued runs and end the running ones now (their directories stay, unfinished)."""
    processes = list((pool._processes or {}).values())  # no public API ends running jobs
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)


def run_jobs(
    jobs: Sequence[FrontierJob],
    workers: int,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every job in `workers` spawned processes; records in job order.

    On any failure or KeyboardInterrupt the pool is stopped (queued runs
    cancelled, running ones terminated) and the exception propagates, so no
    caller ever sees a partial list as if it were complete.
    """
    if workers < 1:
        raise ValueError(f"workers: expected an int >= 1, got {workers}")
    results: dict[int, dict[str, Any]] = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker)
    try:
        pending: dict[Future[dict[str, Any]], int] = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                try:
                    results[index] = future.result()
                except Exception as error:
                    raise FrontierRunError(f"run {jobs[index].label} failed: {error}") from error
                if progress is not None:
                    progress(len(results), len(jobs), results[index])
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return [results[i] for i in range(len(jobs))]


# ------------------------------------------------------------------ the document
def cpu_model() -> str:
    """The CPU's model name as lscpu shows it (from /proc/cpuinfo), else what platform reports."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(workers: int) -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "workers": workers,
        "torch_threads_per_worker": 1,
        **versions(),
    }


def build_document(
    spec: FrontierSpec, runs: list[dict[str, Any]], *, command: str, workers: int, wall_seconds: float
) -> dict[str, Any]:
    task = lookup_task(spec.task)
    order = {name: i for i, name in enumerate((STATIC, *spec.controllers))}
    ordered = sorted(runs, key=lambda r: (r["width"], order[r["controller"]], r["seed"]))
    return {
        "format": FORMAT,
        "complete": True,
        "command": command,
        "spec": asdict(spec),
        "task": spec.task,
        "metric": metric_name(runs),
        "epochs": spec.epochs or task.defaults.epochs,
        "base_host": {"kind": task.host_kind, "config": task.host_config},
        "machine": machine_info(workers),
        "wall_seconds": wall_seconds,
        "flops_note": FLOPS_NOTE,
        "groups": summarize_groups(ordered, spec),
        "runs": ordered,
    }
