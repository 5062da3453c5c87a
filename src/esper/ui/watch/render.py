"""Rich renderables of the run state: what each panel shows, without textual.

Every function takes the state (or a part of it) and a width, and returns
something rich can print; the widgets only place these on screen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from esper.ui.colors import stage_style
from esper.ui.watch.state import EnvView, RunState, SlotView

_BARS = "▁▂▃▄▅▆▇█"
LANE_CELL = "█"

# Policy health thresholds: (warn, bad) and which side is unhealthy. These are
# rules of thumb for PPO on this action space, stated in docs/watch.md.
HEALTH_RULES: dict[str, tuple[str, float, float, str]] = {
    # metric: (label, warn, bad, direction) — "low": unhealthy when below; "high": above
    "entropy": ("entropy", 0.10, 0.02, "low"),  # a collapsing policy stops exploring
    "approx_kl": ("KL", 0.02, 0.05, "high"),  # updates that move the policy too far
    "clip_fraction": ("clip frac", 0.20, 0.30, "high"),  # most samples clipped: steps too large
    "value_loss": ("value loss", 1.0, 10.0, "high"),  # the critic cannot fit the returns
    "explained_variance": ("expl var", 0.30, 0.0, "low"),  # the critic explains nothing (or worse)
}


def health_level(metric: str, value: float) -> str:
    """'ok', 'warn' or 'bad' for a policy health metric (NaN is 'bad': the update diverged)."""
    _, warn, bad, direction = HEALTH_RULES[metric]
    if math.isnan(value):
        return "bad"
    if direction == "low":
        return "bad" if value < bad else "warn" if value < warn else "ok"
    return "bad" if value > bad else "warn" if value > warn else "ok"


LEVEL_STYLE = {"ok": "green", "warn": "bold yellow", "bad": "bold white on red"}


def fit(values: Sequence[float], width: int) -> list[float]:
    """At most `width` values: the newest ones, averaged in buckets when there are more."""
    if width <= 0 or not values:
        return []
    if len(values) <= width:
        return list(values)
    size = len(values) / width
    out = []
    for i in range(width):
        bucket = values[int(i * size) : max(int((i + 1) * size), int(i * size) + 1)]
        finite = [v for v in bucket if math.isfinite(v)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def sparkline(values: Sequence[float], width: int, style: str = "") -> Text:
    """Block characters scaled between the shown values' min and max; non-finite values are blank."""
    shown = fit(values, width)
    finite = [v for v in shown if math.isfinite(v)]
    if not finite:
        return Text("·" * min(width, max(len(shown), 1)), style="grey50")
    low, high = min(finite), max(finite)
    span = high - low
    chars = []
    for value in shown:
        if not math.isfinite(value):
            chars.append(" ")
            continue
        level = 0 if span == 0 else round((value - low) / span * (len(_BARS) - 1))
        chars.append(_BARS[level])
    return Text("".join(chars), style=style)


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def header(state: RunState, status: str) -> Group:
    """Three lines, each cut to the terminal's width: the run, its numbers, what the follower is doing."""
    kind = {"train": "train", "ppo": "PPO", None: "waiting"}[state.kind]
    first = Text(no_wrap=True, overflow="ellipsis")
    first.append(f" {kind} ", style="bold reverse")
    if state.kind is None:
        first.append(" no run events read yet")
        return Group(first, Text(" "), Text(f" {status}", style="grey50", no_wrap=True, overflow="ellipsis"))
    controller = state.controller or ("ppo" if state.kind == "ppo" else "—")
    first.append(f" {state.task or 'task —'} · {controller}")
    if state.kind == "ppo":
        first.append(f" · round {state.round}")
        if state.imitation:
            first.append(f" · imitation passes {len(state.imitation)}")
    else:
        first.append(f" · epoch {max(state.epoch, 0)}")
    first.append(f" · elapsed {fmt_seconds(state.elapsed_seconds)}")
    first.append(f" · rollbacks {state.rollbacks}", style="bold red" if state.rollbacks else "")
    second = Text(" ", no_wrap=True, overflow="ellipsis")
    if state.kind == "ppo":
        accs = [r["mean_final_val_accuracy"] for r in state.rounds if "mean_final_val_accuracy" in r]
        second.append(f"val {fmt_pct(accs[-1] if accs else None)} ")
        second.append(f"best {fmt_pct(max(accs) if accs else None)}", style="bold")
        returns = [r["mean_return"] for r in state.rounds if "mean_return" in r]
        second.append(f" · return {returns[-1]:+.3f}" if returns else " · return —")
        second.append(f" · envs {len(state.envs)}")
    else:
        current = state.current
        second.append(f"val {fmt_pct(current.val_accuracy if current else None)} ")
        second.append(f"best {fmt_pct(state.best_val_accuracy)}", style="bold")
        if state.test_accuracy is not None:
            second.append(f" test {fmt_pct(state.test_accuracy)}")
        if current is not None:
            second.append(
                f" · params {current.total_params:,} = host {current.host_params:,} + seeds {current.seed_params:,}"
            )
    third = Text(" ", no_wrap=True, overflow="ellipsis")
    if state.finished_reason is not None:
        third.append(f"finished: {state.finished_reason} · ", style="bold green")
    if state.problem_count:
        third.append(f"{state.problem_count} bad lines skipped · ", style="bold yellow")
    third.append(status, style="grey50")
    return Group(first, second, third)


def lane(view: SlotView, width: int) -> Text:
    """The slot's stage at each epoch, newest at the right, one coloured cell per epoch (or bucket)."""
    stages = view.lane[-width:] if width > 0 else []
    text = Text()
    for stage in stages:
        text.append(LANE_CELL, style=stage_style(stage).removeprefix("bold "))
    return text


def slot_cells(view: SlotView) -> tuple[Text, str, str, str, str]:
    contribution = "—" if view.contribution is None else f"{view.contribution:+.2f}"
    return (
        Text(view.stage, style=stage_style(view.stage)),
        view.blueprint or "—",
        f"{view.alpha:.2f}",
        contribution,
        str(view.epochs_in_stage),
    )


def curves(state: RunState, width: int) -> Table:
    """Train/val loss and accuracy and parameter count as labelled sparklines."""
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, justify="right")
    spark_width = max(width - 28, 4)
    points = state.epochs
    rows: list[tuple[str, list[float], str, str]] = [
        ("train loss", [p.train_loss for p in points], "#7f8c8d", "{:.3f}"),
        ("val loss", [p.val_loss for p in points], "#5dade2", "{:.3f}"),
        ("train acc", [100 * p.train_accuracy for p in points], "#7f8c8d", "{:.1f}%"),
        ("val acc", [100 * p.val_accuracy for p in points], "#5dade2", "{:.1f}%"),
        ("params", [float(p.total_params) for p in points], "#2ca02c", "{:,.0f}"),
    ]
    for label, values, style, pattern in rows:
        last = pattern.format(values[-1]) if values else "—"
        table.add_row(label, sparkline(values, spark_width, style), last)
    return table


def ppo_curves(state: RunState, width: int) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, justify="right")
    spark_width = max(width - 30, 4)
    for key, label in (("mean_return", "return"), ("mean_final_val_accuracy", "val acc"), ("entropy", "entropy")):
        values = [r[key] for r in state.rounds if key in r]
        table.add_row(label, sparkline(values, spark_width, "#8e44ad"), f"{values[-1]:.3f}" if values else "—")
    return table


def env_rows(envs: dict[int, EnvView]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for index in sorted(envs):
        env = envs[index]
        shown_return = env.episode_return if env.epoch else env.last_return
        rows.append(
            (
                str(index),
                fmt_pct(env.val_accuracy),
                "—" if shown_return is None else f"{shown_return:+.3f}",
                "—" if env.seeds is None else str(env.seeds),
                env.last_action or "—",
            )
        )
    return rows


def policy_health(state: RunState, width: int = 40) -> Table:
    """The latest round's health metrics, coloured by HEALTH_RULES; the ok/warn/bad word only when it fits."""
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, justify="right")
    words = width >= 26
    if words:
        table.add_column(no_wrap=True)
    latest = state.rounds[-1] if state.rounds else {}
    for metric, (label, _, _, _) in HEALTH_RULES.items():
        if metric not in latest:
            table.add_row(label, "—", *([""] if words else []))
            continue
        value = latest[metric]
        style = LEVEL_STYLE[health_level(metric, value)]
        cells = [Text(f"{value:.3g}", style=style)]
        if words:
            cells.append(Text(health_level(metric, value), style=style))
        table.add_row(label, *cells)
    return table


def bars(values: dict[str, float], width: int, signed: bool = False) -> RenderableType:
    """Horizontal bars, one per name, each on one line; with `signed`, scaled by the largest magnitude."""
    if not values:
        return Text("none yet", style="grey50")
    number_width = 8 if signed else 7
    label_width = max(min(max(len(name) for name in values), 18, width - number_width - 4), 3)
    bar_width = max(width - label_width - number_width - 1, 1)
    scale = max((abs(v) for v in values.values() if math.isfinite(v)), default=0.0) or 1.0
    lines = []
    for name, value in values.items():
        line = Text(f"{name[:label_width]:<{label_width}} ", no_wrap=True, overflow="ellipsis")
        filled = 0 if not math.isfinite(value) else round(abs(value) / scale * bar_width)
        style = "red" if signed and value < 0 else "#1f78b4"
        line.append("█" * filled, style=style)
        line.append(" " * (bar_width - filled))
        line.append(f" {value:+.3f}" if signed else f" {100 * value:5.1f}%")
        lines.append(line)
    return Group(*lines)


def seed_history(view: SlotView, width: int) -> RenderableType:
    """Everything the events say about one slot: stage changes, gates, contribution curve, end reason."""
    parts: list[RenderableType] = []
    title = Text(f"slot {view.slot}", style="bold")
    title.append(" · now ")
    title.append(view.stage, style=stage_style(view.stage))
    title.append(f" · blueprint {view.blueprint or '—'} · alpha {view.alpha:.2f}")
    parts.append(title)
    parts.append(Text("stage over time: ") + lane(view, max(width - 18, 4)))
    reason = view.end_reason
    if reason is not None:
        parts.append(Text(f"ended: {reason}", style="bold"))
    parts.append(Text("\nstage changes", style="bold underline"))
    if not view.changes:
        parts.append(Text("none", style="grey50"))
    for change in view.changes:
        line = Text(f"epoch {change.epoch:>4}  {change.blueprint or '—'}  {change.from_stage} → ")
        line.append(change.to_stage, style=stage_style(change.to_stage))
        line.append(f"  {change.reason}")
        parts.append(line)
    parts.append(Text("\ngates", style="bold underline"))
    if not view.gates:
        parts.append(Text("none evaluated", style="grey50"))
    for gate in view.gates:
        line = Text(f"epoch {gate.epoch:>4}  {gate.gate} → {gate.target_stage}  ")
        line.append("passed" if gate.passed else "FAILED", style="green" if gate.passed else "bold red")
        parts.append(line)
        for check in gate.checks_passed:
            parts.append(Text(f"      ✓ {check}", style="green"))
        for check in gate.checks_failed:
            parts.append(Text(f"      ✗ {check}", style="red"))
    parts.append(Text("\ncontribution (accuracy points, all on minus this seed off)", style="bold underline"))
    if view.contributions:
        values = [value for _, value in view.contributions]
        curve = sparkline(values, max(width - 30, 4), "#2ca02c")
        summary = f" last {values[-1]:+.2f} · min {min(values):+.2f} · max {max(values):+.2f}"
        parts.append(Text(f"{len(values)} measurements ") + curve + Text(summary))
    else:
        parts.append(Text("not measured yet", style="grey50"))
    parts.append(Text("\ngradient ratio", style="bold underline"))
    parts.append(
        Text(
            "not recorded in events.jsonl (only the gate check that uses it appears above)",
            style="grey50",
        )
    )
    return Group(*parts)
