"""`report.png`: one picture of a run, drawn from its telemetry events alone.

Three panels share the epoch axis: accuracy (train, val, final test) with
lifecycle and rollback markers; parameter counts (host and seeds stacked,
total on top); and a swimlane per slot coloured by stage with the blend alpha
drawn inside the lane. Because only events are read, `events.jsonl` is enough
to re-draw any run (`render_report_from_file`).

The figure is a bare `Figure` on an Agg canvas (never pyplot), so drawing
needs no display and leaves the process's matplotlib backend alone.

Epoch convention: epoch e's metrics describe the state at the end of epoch e,
so its stage block spans [e-1, e] and its accuracy sits at x = e. A lifecycle
event logged at epoch e happened after that epoch's metrics, at x = e.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from esper.checkpoints.atomic import atomic_write
from esper.contracts.slot_ids import sort_slot_ids
from esper.contracts.stages import SeedStage
from esper.telemetry.events import (
    EpochMetrics,
    GovernorAction,
    RunFinished,
    RunStarted,
    SeedStageChanged,
    TelemetryEvent,
)
from esper.telemetry.replay import read_events
from esper.telemetry.strict_json import float_from_json
from esper.ui import colors

_WIDTH_INCHES = 13.0
_DPI = 110
_LANE_HEIGHT = 0.72  # lanes sit at integer y; the rest is the gap between lanes
_LEGEND_STAGES = [stage for stage in SeedStage if stage != SeedStage.UNKNOWN]
# Stages without a seed in the slot: no alpha line is drawn there.
_EMPTY_STAGES = frozenset({"UNKNOWN", "DORMANT", "EMBARGOED", "RESETTING"})
_LABEL_ROOM = 0.1  # fraction of the epoch axis a blueprint name needs on its right
_EVENT_MARKS = {"GERMINATED": "germinated", "FOSSILIZED": "fossilized", "PRUNED": "pruned"}


@dataclass(frozen=True)
class RunTimeline:
    """What the report needs, pulled out of one run's events."""

    started: RunStarted
    epochs: list[EpochMetrics]  # sorted by epoch, one per epoch (the last one logged wins)
    stage_changes: list[SeedStageChanged]
    rollbacks: list[GovernorAction]  # rollback and abort actions (snapshots are not drawn)
    test_accuracy: float | None  # fraction; None when the run did not finish
    slots: list[str]  # row-major


def collect_timeline(events: Sequence[TelemetryEvent]) -> RunTimeline:
    """Validate that `events` describe one drawable run and index them."""
    started: RunStarted | None = None
    finished: RunFinished | None = None
    by_epoch: dict[int, EpochMetrics] = {}
    stage_changes: list[SeedStageChanged] = []
    rollbacks: list[GovernorAction] = []
    envs: set[int | None] = set()
    for index, event in enumerate(events):
        if not isinstance(event, TelemetryEvent):
            raise TypeError(
                f"render_report: events[{index}] is a {type(event).__name__}, not a TelemetryEvent"
            )
        if isinstance(event, RunStarted) and started is None:
            started = event
        elif isinstance(event, EpochMetrics):
            envs.add(event.env)
            by_epoch[event.epoch] = event  # a resumed run may log an epoch twice: keep the last
        elif isinstance(event, SeedStageChanged):
            stage_changes.append(event)
        elif isinstance(event, GovernorAction) and event.action != "snapshot":
            rollbacks.append(event)
        elif isinstance(event, RunFinished):
            finished = event
    if started is None:
        raise ValueError(
            "render_report: no run_started event (the report needs the task, controller and seed)"
        )
    if not by_epoch:
        raise ValueError("render_report: no epoch_metrics event, so there is nothing to plot")
    if len(envs) > 1:
        raise ValueError(
            f"render_report: epoch_metrics come from several environments {sorted(envs, key=str)}; "
            "a report draws one run"
        )
    epochs = [by_epoch[epoch] for epoch in sorted(by_epoch)]
    slot_ids = set(started.slots)
    for metrics in epochs:
        slot_ids.update(metrics.slots)
    return RunTimeline(
        started=started,
        epochs=epochs,
        stage_changes=stage_changes,
        rollbacks=rollbacks,
        test_accuracy=_test_accuracy(finished),
        slots=sort_slot_ids(slot_ids),
    )


def _test_accuracy(finished: RunFinished | None) -> float | None:
    if finished is None or "test_accuracy" not in finished.summary:
        return None
    value = float_from_json(finished.summary["test_accuracy"])  # "NaN" etc. as events write them
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"render_report: run_finished.summary.test_accuracy: expected a number, got {value!r}"
        )
    return float(value)


def render_report(events: list[TelemetryEvent], out_path: Path) -> None:
    """Draw the run described by `events` into a PNG at `out_path` (written atomically)."""
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".png":
        raise ValueError(f"render_report.out_path: expected a .png file, got {str(out_path)!r}")
    timeline = collect_timeline(events)
    figure = build_figure(timeline)
    FigureCanvasAgg(figure)  # attach the Agg canvas explicitly: no GUI backend is ever consulted
    atomic_write(out_path, lambda handle: figure.savefig(handle, format="png", dpi=_DPI))


def render_report_from_file(events_path: Path, out_path: Path) -> None:
    """Re-draw a run's report from its `events.jsonl`."""
    render_report(read_events(events_path), out_path)


def build_figure(timeline: RunTimeline) -> Figure:
    lane_inches = max(1.7, 0.5 * len(timeline.slots) + 0.9)
    figure = Figure(figsize=(_WIDTH_INCHES, 3.4 + 2.3 + lane_inches), layout="constrained")
    grid = figure.add_gridspec(3, 1, height_ratios=[3.4, 2.3, lane_inches])
    accuracy_axes = figure.add_subplot(grid[0])
    params_axes = figure.add_subplot(grid[1], sharex=accuracy_axes)
    lanes_axes = figure.add_subplot(grid[2], sharex=accuracy_axes)
    _draw_accuracy(accuracy_axes, timeline)
    _draw_params(params_axes, timeline)
    _draw_lanes(lanes_axes, timeline)
    last_epoch = timeline.epochs[-1].epoch
    first_block = min(0, timeline.epochs[0].epoch - 1)
    accuracy_axes.set_xlim(first_block, last_epoch + 0.25)
    lanes_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    lanes_axes.set_xlabel("epoch")
    for axes in (accuracy_axes, params_axes):
        axes.tick_params(labelbottom=False)
    figure.suptitle(_title(timeline), fontsize=14, fontweight="bold")
    return figure


def _title(timeline: RunTimeline) -> str:
    started = timeline.started
    accuracy = timeline.test_accuracy
    test = "n/a (run not finished)" if accuracy is None else f"{100 * accuracy:.2f}%"
    return f"{started.task} · controller {started.controller} · seed {started.seed} · test accuracy {test}"


def _details(timeline: RunTimeline) -> str:
    last = timeline.epochs[-1]
    outcomes = [change.to_stage for change in timeline.stage_changes]
    return (
        f"{last.epoch} epochs · {last.total_params:,} params (host {last.host_params:,} + seeds "
        f"{last.seed_params:,}) · seeds: {outcomes.count('GERMINATED')} germinated, "
        f"{outcomes.count('FOSSILIZED')} fossilized, {outcomes.count('PRUNED')} pruned · "
        f"rollbacks {len(timeline.rollbacks)}"
    )


def _draw_rollbacks(axes: Axes, timeline: RunTimeline) -> None:
    for action in timeline.rollbacks:
        axes.axvline(action.epoch, color=colors.ROLLBACK_COLOR, linestyle="--", linewidth=1.4, zorder=4)


def _draw_accuracy(axes: Axes, timeline: RunTimeline) -> None:
    xs = [m.epoch for m in timeline.epochs]
    axes.plot(xs, [100 * m.train_accuracy for m in timeline.epochs], color=colors.TRAIN_COLOR,
              linewidth=1.6, marker="o", markersize=2.5, label="train")
    axes.plot(xs, [100 * m.val_accuracy for m in timeline.epochs], color=colors.VAL_COLOR,
              linewidth=2.0, marker="o", markersize=3, label="validation")
    handles, labels = axes.get_legend_handles_labels()
    if timeline.test_accuracy is not None:
        test = 100 * timeline.test_accuracy
        axes.axhline(test, color=colors.TEST_COLOR, linestyle=":", linewidth=1.2)
        axes.plot([xs[-1]], [test], marker="D", markersize=7, color=colors.TEST_COLOR, zorder=5)
        handles.append(Line2D([], [], color=colors.TEST_COLOR, linestyle=":", marker="D"))
        labels.append(f"test (final) {test:.2f}%")
    drawn: set[str] = set()
    for change in timeline.stage_changes:
        if change.to_stage in _EVENT_MARKS:
            axes.axvline(change.epoch, color=colors.stage_color(change.to_stage), linewidth=1.2,
                         alpha=0.75, zorder=1)
            drawn.add(change.to_stage)
    for stage, label in _EVENT_MARKS.items():
        if stage in drawn:
            handles.append(Line2D([], [], color=colors.stage_color(stage), linewidth=1.2))
            labels.append(label)
    _draw_rollbacks(axes, timeline)
    if timeline.rollbacks:
        handles.append(Line2D([], [], color=colors.ROLLBACK_COLOR, linestyle="--"))
        labels.append("governor rollback")
    axes.set_ylabel("accuracy (%)")
    axes.grid(True, alpha=0.3)
    axes.set_title(_details(timeline), loc="left", fontsize=10.5)
    axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)


def _compact(value: float, _position: object = None) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f}".removesuffix(".0") + "M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.0f}k" if abs(value) >= 1e4 else f"{value / 1e3:.1f}".removesuffix(".0") + "k"
    return f"{value:.0f}"


def _draw_params(axes: Axes, timeline: RunTimeline) -> None:
    xs = [m.epoch for m in timeline.epochs]
    host = [m.host_params for m in timeline.epochs]
    seeds = [m.seed_params for m in timeline.epochs]
    last = timeline.epochs[-1]
    axes.stackplot(
        xs, host, seeds, colors=[colors.HOST_PARAMS_COLOR, colors.SEED_PARAMS_COLOR], alpha=0.8,
        labels=[f"host ({_compact(last.host_params)})", f"seeds ({_compact(last.seed_params)})"],
        step="pre",
    )
    axes.step(xs, [m.total_params for m in timeline.epochs], where="pre", color=colors.TOTAL_PARAMS_COLOR,
              linewidth=1.6, label=f"total ({last.total_params:,})")
    _draw_rollbacks(axes, timeline)
    axes.set_ylim(0, max(m.total_params for m in timeline.epochs) * 1.15 + 1)
    axes.yaxis.set_major_formatter(FuncFormatter(_compact))
    axes.set_ylabel("parameters")
    axes.grid(True, alpha=0.3)
    axes.set_title("parameters", loc="left", fontsize=11)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)


def _lane_runs(stages: list[tuple[int, str]]) -> list[tuple[int, int, str]]:
    """Merge consecutive epochs with one stage into (first epoch, last epoch, stage) runs."""
    runs: list[tuple[int, int, str]] = []
    for epoch, stage in stages:
        if runs and runs[-1][2] == stage and runs[-1][1] == epoch - 1:
            runs[-1] = (runs[-1][0], epoch, stage)
        else:
            runs.append((epoch, epoch, stage))
    return runs


def _draw_lane(axes: Axes, timeline: RunTimeline, slot: str, bottom: float) -> None:
    stages = [(m.epoch, m.slots[slot].stage) for m in timeline.epochs if slot in m.slots]
    for first, last, stage in _lane_runs(stages):
        axes.broken_barh([(first - 1, last - first + 1)], (bottom, _LANE_HEIGHT),
                         facecolors=colors.stage_color(stage), edgecolor="white", linewidth=0.6)
    # Alpha as a step line: within the block [e-1, e] it sits at epoch e's alpha.
    xs: list[float] = []
    ys: list[float] = []
    for m in timeline.epochs:
        if slot not in m.slots:  # a slot absent from an epoch is simply not drawn there
            continue
        snapshot = m.slots[slot]
        level = math.nan if snapshot.stage in _EMPTY_STAGES else bottom + snapshot.alpha * _LANE_HEIGHT
        xs.extend([m.epoch - 1, m.epoch])
        ys.extend([level, level])
    outline = [patheffects.withStroke(linewidth=3.2, foreground="white")]
    axes.plot(xs, ys, color="black", linewidth=1.5, path_effects=outline, zorder=3)


def _draw_lanes(axes: Axes, timeline: RunTimeline) -> None:
    if not timeline.slots:
        axes.text(0.5, 0.5, "this host has no slots", ha="center", va="center", transform=axes.transAxes)
        axes.set_yticks([])
    bottoms = {slot: float(len(timeline.slots) - 1 - row) for row, slot in enumerate(timeline.slots)}
    for slot, bottom in bottoms.items():
        _draw_lane(axes, timeline, slot, bottom)
    last_epoch = timeline.epochs[-1].epoch
    label_box = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
    for change in timeline.stage_changes:
        if change.slot not in bottoms:
            continue
        bottom = bottoms[change.slot]
        if change.to_stage == "GERMINATED" and change.blueprint:
            # Near the right edge the name goes left of the start so it stays inside the lanes.
            near_end = change.epoch > last_epoch - _LABEL_ROOM * max(last_epoch, 1)
            x, align = (change.epoch - 0.12, "right") if near_end else (change.epoch + 0.12, "left")
            axes.text(x, bottom + _LANE_HEIGHT / 2, change.blueprint, fontsize=8, ha=align, va="center",
                      bbox=label_box, zorder=6)
        elif change.to_stage == "FOSSILIZED":
            axes.plot([change.epoch], [bottom + _LANE_HEIGHT], marker="*", markersize=13, zorder=7,
                      color=colors.stage_color("FOSSILIZED"), markeredgecolor="black", markeredgewidth=0.6)
        elif change.to_stage == "PRUNED":
            axes.plot([change.epoch], [bottom + _LANE_HEIGHT], marker="X", markersize=10, zorder=7,
                      color=colors.stage_color("PRUNED"), markeredgecolor="black", markeredgewidth=0.6)
    _draw_rollbacks(axes, timeline)
    if timeline.slots:
        axes.set_yticks([bottom + _LANE_HEIGHT / 2 for bottom in bottoms.values()], list(bottoms))
        axes.set_ylim(-0.2, len(timeline.slots) + 0.05)
    axes.set_ylabel("slot")
    axes.set_title("seed lifecycle per slot (line: blend alpha, 0 at the lane's bottom, 1 at its top)",
                   loc="left", fontsize=11)
    handles: list[Patch | Line2D] = [
        Patch(facecolor=colors.stage_color(stage), edgecolor="#999999", label=stage.name.lower())
        for stage in _LEGEND_STAGES
    ]
    handles.append(Line2D([], [], color="black", linewidth=1.5, label="alpha"))
    handles.append(Line2D([], [], linestyle="none", marker="*", markersize=11, markeredgecolor="black",
                          color=colors.stage_color("FOSSILIZED"), label="fossilized"))
    handles.append(Line2D([], [], linestyle="none", marker="X", markersize=9, markeredgecolor="black",
                          color=colors.stage_color("PRUNED"), label="pruned"))
    columns = 1 if len(timeline.slots) >= 4 else 2
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False,
                ncols=columns)
