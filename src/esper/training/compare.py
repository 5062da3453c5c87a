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

from esper.hosts import build_host
from esper.tasks import TaskOptions, default_tasks
from esper.training.config import TrainConfig
from esper.training.trainer import run_training

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


def _param_count(kind: str, config: dict[str, Any]) -> int:
    host = build_host(kind, config)
    return sum(p.numel() for p in {id(p): p for p in host.parameters()}.values())


def _scaled(config: dict[str, Any], factor: float) -> dict[str, Any]:
    scaled = dict(config)
    if "widths" in config:
        scaled["widths"] = [max(1, round(w * factor)) for w in config["widths"]]
    elif "d_model" in config:
        heads = config["n_heads"]
        scaled["d_model"] = max(heads, round(config["d_model"] * factor / heads) * heads)
    else:
        raise ValueError(f"cannot widen a host config without 'widths' or 'd_model': {sorted(config)}")
    return scaled


def widened_overrides(kind: str, config: dict[str, Any], target_params: float) -> dict[str, Any]:
    """Host overrides whose parameter count is closest to `target_params`."""
    low, high = 1.0, 1.0
    while _param_count(kind, _scaled(config, high)) < target_params:
        high *= 2.0
    for _ in range(30):
        middle = (low + high) / 2.0
        if _param_count(kind, _scaled(config, middle)) < target_params:
            low = middle
        else:
            high = middle
    best = min((_scaled(config, f) for f in (low, high)), key=lambda c: abs(_param_count(kind, c) - target_params))
    return {k: v for k, v in best.items() if v != config[k]}


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
    summary = run_training(config, out_dir=out, render=False, overwrite=True)
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
    the_task = default_tasks().get(task)
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
