"""Draw a frontier document: test metric against parameters, and against training FLOPs (log scales).

Static hosts are joined as the frontier line; each growth controller's mean
point is drawn with an arrow from the static host it started from. Error bars
are the sample standard deviation over seeds (metric and parameters or FLOPs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from esper.checkpoints.atomic import atomic_write

_DPI = 120
_LABELS = {"test_accuracy": "test accuracy (%)", "bits_per_char": "test bits per character (lower is better)"}
_COLORS = ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_X_LABELS = {"total_params": "parameters (log scale)", "training_flops": "training FLOPs (log scale)"}


def _value(metric: str, value: float) -> float:
    return 100.0 * value if metric == "test_accuracy" else value


def build_figure(document: dict[str, Any], x_key: str = "total_params") -> Figure:
    """The frontier against `x_key`: "total_params" (frontier.png) or "training_flops" (compute.png)."""
    if x_key not in _X_LABELS:
        raise ValueError(f"frontier plot: x_key must be one of {sorted(_X_LABELS)}, got {x_key!r}")
    mean, std = f"{x_key}_mean", f"{x_key}_std"
    metric = document["metric"]
    groups = document["groups"]
    controllers = list(dict.fromkeys(g["controller"] for g in groups))
    figure = Figure(figsize=(8.0, 5.5), layout="constrained")
    axes = figure.add_subplot()
    # A group without the x value (an older document: no FLOPs where a seed grew) is left out.
    groups = [g for g in groups if g.get(mean) is not None]
    static = sorted((g for g in groups if g["controller"] == "static"), key=lambda g: g[mean])
    starts = {g["width"]: g for g in static}
    axes.errorbar(
        [g[mean] for g in static],
        [_value(metric, g["metric_mean"]) for g in static],
        yerr=[_value(metric, g["metric_std"]) for g in static],
        fmt="o-",
        color="#1f77b4",
        capsize=3,
        zorder=3,  # over the grown points, which sit on it when nothing grew
        label="static host (frontier)",
    )
    for g in static:
        axes.annotate(
            f"×{g['width']:g}",
            (g[mean], _value(metric, g["metric_mean"])),
            textcoords="offset points",
            xytext=(6, -12),
            fontsize=8,
            color="#1f77b4",
        )
    for index, controller in enumerate(c for c in controllers if c != "static"):
        color = _COLORS[index % len(_COLORS)]
        mine = [g for g in groups if g["controller"] == controller]
        grew = sum(g["runs_that_grew"] for g in mine)
        total = sum(g["runs"] for g in mine)
        axes.errorbar(
            [g[mean] for g in mine],
            [_value(metric, g["metric_mean"]) for g in mine],
            xerr=[g.get(std) or 0.0 for g in mine],
            yerr=[_value(metric, g["metric_std"]) for g in mine],
            fmt="s",
            color=color,
            capsize=3,
            markerfacecolor="none",
            markersize=11,  # larger than the static dot, so a grown point on it stays visible
            markeredgewidth=1.5,
            label=f"grown · {controller} ({grew}/{total} runs germinated a seed)",
        )
        for g in mine:
            start = starts.get(g["width"])
            if start is None:
                continue
            axes.annotate(
                "",
                xy=(g[mean], _value(metric, g["metric_mean"])),
                xytext=(start[mean], _value(metric, start["metric_mean"])),
                arrowprops={"arrowstyle": "->", "color": color, "lw": 1.2, "shrinkA": 4, "shrinkB": 4},
            )
    axes.set_xscale("log")
    if x_key == "total_params":
        # Ticks at the static hosts' sizes: the numbers a reader compares grown models with.
        axes.set_xticks([g[mean] for g in static], [f"{g[mean]:,.0f}" for g in static])
        axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel(_X_LABELS[x_key])
    axes.set_ylabel(_LABELS[metric])
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="best", fontsize=9)
    seeds = len(document["spec"]["seeds"])
    against = "" if x_key == "total_params" else " · against compute"
    figure.suptitle(
        f"esper frontier · {document['task']} · {document['epochs']} epochs · {seeds} seeds (mean ± std){against}",
        fontsize=12,
        fontweight="bold",
    )
    return figure


def render_frontier(document: dict[str, Any], out_path: Path) -> None:
    """Draw `document` into a PNG at `out_path`, written atomically."""
    figure = build_figure(document)
    FigureCanvasAgg(figure)  # the Agg canvas, explicitly: no GUI backend is ever consulted
    atomic_write(out_path, lambda handle: figure.savefig(handle, format="png", dpi=_DPI))


def render_compute(document: dict[str, Any], out_path: Path) -> None:
    """Draw `document`'s test metric against training FLOPs into a PNG at `out_path`, written atomically."""
    figure = build_figure(document, "training_flops")
    FigureCanvasAgg(figure)
    atomic_write(out_path, lambda handle: figure.savefig(handle, format="png", dpi=_DPI))
