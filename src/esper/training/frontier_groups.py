"""The frontier document's statistics: one row per (width, controller), and the static frontier.

Kept apart from the runner (esper.training.frontier) because it is pure arithmetic over the
recorded runs: mean and sample std over seeds, and each group's metric against its own static
host and against the static frontier interpolated at its parameter count.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from esper.training.frontier import FrontierSpec

STATIC = "static"


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def metric_name(runs: Sequence[dict[str, Any]]) -> str:
    """The plotted metric: bits per character for a language model, else test accuracy."""
    return "bits_per_char" if runs and "bits_per_char" in runs[0] else "test_accuracy"


def summarize_groups(runs: Sequence[dict[str, Any]], spec: FrontierSpec) -> list[dict[str, Any]]:
    """One row per (width, controller): mean and sample std over seeds."""
    metric = metric_name(runs)
    rows = []
    for width in spec.all_widths():
        for controller in spec.controllers_at(width):
            mine = [r for r in runs if r["width"] == width and r["controller"] == controller]
            if len(mine) != len(spec.seeds):
                raise ValueError(
                    f"frontier: width {width:g} {controller}: expected {len(spec.seeds)} runs, got {len(mine)}"
                )
            values = [float(r[metric]) for r in mine]
            params = [float(r["total_params"]) for r in mine]
            accuracies = [float(r["test_accuracy"]) for r in mine]
            flops = [r["training_flops"] for r in mine]
            rows.append(
                {
                    "width": width,
                    "controller": controller,
                    "host_overrides": mine[0]["host_overrides"],
                    "runs": len(mine),
                    "metric": metric,
                    "metric_mean": statistics.fmean(values),
                    "metric_std": _std(values),
                    "test_accuracy_mean": statistics.fmean(accuracies),
                    "test_accuracy_std": _std(accuracies),
                    "host_params": mine[0]["host_params"],
                    "total_params_mean": statistics.fmean(params),
                    "total_params_std": _std(params),
                    "runs_that_grew": sum(1 for r in mine if r["seeds_germinated"] > 0),
                    "runs_with_fossilized_seeds": sum(1 for r in mine if r["seeds_fossilized"] > 0),
                    "training_flops_mean": None if None in flops else statistics.fmean(flops),
                    "training_flops_std": None if None in flops else _std(flops),
                    "wall_seconds_mean": statistics.fmean(float(r["wall_seconds"]) for r in mine),
                }
            )
    _compare_with_static(rows)
    return rows


def frontier_value(static: Sequence[dict[str, Any]], params: float) -> float | None:
    """The static frontier's metric at `params`: linear in log(parameters) between the two static
    hosts around it; None outside the measured range (no extrapolation)."""
    points = sorted((g["total_params_mean"], g["metric_mean"]) for g in static)
    if not points or not points[0][0] <= params <= points[-1][0]:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= params <= x1:
            if x1 == x0:
                return float(y0)
            t = (math.log(params) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return float(y0 + t * (y1 - y0))
    return float(points[0][1])  # a single static host, exactly at its size


def _compare_with_static(rows: list[dict[str, Any]]) -> None:
    """Add to each row its metric minus its own static host's and minus the frontier's at its size.

    Plain differences of the metric: for accuracy positive is better, for bits per character
    negative is better.
    """
    static = [r for r in rows if r["controller"] == STATIC]
    own = {r["width"]: r["metric_mean"] for r in static}
    for row in rows:
        row["metric_minus_own_host"] = row["metric_mean"] - own[row["width"]]
        at = frontier_value(static, row["total_params_mean"])
        row["frontier_metric_at_params"] = at
        row["metric_minus_frontier"] = None if at is None else row["metric_mean"] - at
