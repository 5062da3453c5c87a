"""`esper compare`: is growth worth it? The same task, side by side:

- static: the host alone;
- heuristic: grown by the heuristic controller;
- random: grown by uniformly random valid actions;
- static-wide: the host widened to the grown model's mean parameter count
  (every width scaled by one factor, found by bisection on exact counts), so
  growth is compared with simply training a bigger static model.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esper.tasks import TaskOptions
from esper.training.config import TrainConfig
from esper.training.plan import lookup_task
from esper.training.trainer import run_training
from esper.training.widening import widened_overrides

VARIANTS = ("static", "heuristic", "random", "static-wide")


@dataclass
class VariantResult:
    variant: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        accuracies = [r["test_accuracy"] for r in self.runs]
        return {
            "variant": self.variant,
            "test_accuracy_mean": statistics.fmean(accuracies),
            "test_accuracy_std": statistics.pstdev(accuracies),
            "total_params_mean": statistics.fmean(r["total_params"] for r in self.runs),
            "wall_seconds_mean": statistics.fmean(r["wall_seconds"] for r in self.runs),
            "per_seed": self.runs,
        }


def _run(
    task: str,
    controller: str,
    seed: int,
    epochs: int | None,
    out: Path,
    overrides: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    config = TrainConfig(task=task, controller=controller, seed=seed, epochs=epochs, host_overrides=overrides, **extra)
    # A comparison owns the run directories under its --out: running it again replaces them.
    summary = run_training(config, out_dir=out, overwrite=True)
    return {
        k: summary[k] for k in ("seed", "test_accuracy", "total_params", "host_params", "seed_params", "wall_seconds")
    } | {"seeds": len(summary["seeds"])}


def compare(
    task: str,
    seeds: list[int],
    *,
    epochs: int | None,
    out_dir: Path,
    extra: dict[str, Any] | None = None,
    progress: Any = None,
) -> list[dict[str, Any]]:
    extra = extra or {}
    the_task = lookup_task(task)
    results = {v: VariantResult(v) for v in VARIANTS}
    for variant in ("static", "heuristic", "random"):
        for seed in seeds:
            if progress is not None:
                progress(f"{variant} seed {seed}")
            results[variant].runs.append(
                _run(task, variant, seed, epochs, out_dir / f"{variant}-seed{seed}", {}, extra)
            )
    grown = statistics.fmean(r["total_params"] for r in results["heuristic"].runs)
    host_config = the_task.host_config
    if the_task.output_key not in host_config:  # sized by the data (the text task's vocabulary)
        config = TrainConfig(task=task, **extra)
        options = TaskOptions(
            data_dir=Path(config.data_dir) if config.data_dir else None,
            text_file=Path(config.text_file) if config.text_file else None,
            seed=seeds[0],
        )
        host_config = the_task.host_config_for(the_task.load_data(options))
    overrides = widened_overrides(the_task.host_kind, host_config, grown)
    for seed in seeds:
        if progress is not None:
            progress(f"static-wide seed {seed}")
        results["static-wide"].runs.append(
            _run(task, "static", seed, epochs, out_dir / f"static-wide-seed{seed}", overrides, extra)
        )
    rows = [results[v].row() for v in VARIANTS]
    rows[-1]["host_overrides"] = overrides
    return rows
