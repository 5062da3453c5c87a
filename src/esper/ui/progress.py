"""The live training display of `esper train`, fed by telemetry events.

`TrainingProgress` is a telemetry backend (`name`, `write`, `close`), so the
trainer attaches it to the run's hub like any other sink. On a terminal it
draws a rich Live panel: header, a progress bar over epochs, the latest
losses and accuracies, parameter counts and one row per slot. Lifecycle
changes (stage changes, rollbacks, the run's end) print as one-liners above
it. Elsewhere (pipes, CI) it prints one plain line per epoch plus the same
one-liners, so logs stay readable. enabled=False prints nothing at all.
It writes to stderr by default, so stdout carries only the run's result.

Every printed line is built as `rich.text.Text`, never parsed as markup, so
reasons containing "[...]" print as written.
"""

from __future__ import annotations

import math
from types import TracebackType

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from esper.telemetry.events import (
    BackendFailed,
    EpochMetrics,
    GovernorAction,
    RunFinished,
    RunStarted,
    SeedStageChanged,
    SlotSnapshot,
    TelemetryEvent,
)
from esper.ui.colors import stage_style

_REFRESH_PER_SECOND = 4
_GOVERNOR_STYLES = {"rollback": "bold yellow", "abort": "bold red"}


def _percent(fraction: float) -> str:
    return "n/a" if math.isnan(fraction) else f"{100 * fraction:.2f}%"


def _loss(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"  # NaN: the epoch was rolled back


def _contribution(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f} pt"


class TrainingProgress:
    """Live view of one training run; a context manager and a telemetry backend."""

    name = "progress"

    def __init__(self, total_epochs: int, title: str, console: Console | None = None, enabled: bool = True) -> None:
        if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs < 1:
            raise ValueError(f"TrainingProgress.total_epochs: expected an int >= 1, got {total_epochs!r}")
        if not isinstance(title, str):
            raise TypeError(f"TrainingProgress.title: expected a str, got {type(title).__name__}")
        if console is not None and not isinstance(console, Console):
            raise TypeError(f"TrainingProgress.console: expected a rich Console or None, got {type(console).__name__}")
        if not isinstance(enabled, bool):
            raise TypeError(f"TrainingProgress.enabled: expected a bool, got {type(enabled).__name__}")
        self.console = console if console is not None else Console(stderr=True, highlight=False)
        self.enabled = enabled
        self.title = title
        self.total_epochs = total_epochs
        # A live panel only on a real terminal: rich reports pipes and CI logs as non-terminals.
        self.live_mode = enabled and self.console.is_terminal
        self._started: RunStarted | None = None
        self._latest: EpochMetrics | None = None
        self._live: Live | None = None
        self._closed = False
        self._bar = Progress(
            TextColumn("epoch"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("·"),
            TimeElapsedColumn(),
            TextColumn("· left"),
            TimeRemainingColumn(),
            console=self.console,
            expand=True,
        )
        self._task = self._bar.add_task("epochs", total=total_epochs)

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> TrainingProgress:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Begin the live panel (terminal mode only); a second call does nothing."""
        if self._closed:
            raise RuntimeError("TrainingProgress.start: the display was already closed")
        if self.live_mode and self._live is None:
            self._live = Live(
                get_renderable=self._renderable, console=self.console, refresh_per_second=_REFRESH_PER_SECOND,
                transient=False,
            )
            self._live.start()

    def close(self) -> None:
        """Stop the live panel, leaving its last frame on screen; idempotent."""
        self._closed = True
        if self._live is not None:
            self._live.stop()
            self._live = None

    # ------------------------------------------------------------- backend
    def write(self, event: TelemetryEvent) -> None:
        """Take any telemetry event; the ones this display shows update it or print a line."""
        if not isinstance(event, TelemetryEvent):
            raise TypeError(f"TrainingProgress.write: expected a TelemetryEvent, got {type(event).__name__}")
        if not self.enabled:
            return
        if isinstance(event, EpochMetrics):
            self.update(event)
        elif isinstance(event, RunStarted):
            self._started = event
            if not self._showing_live:
                self.note(self._header_text())
        elif isinstance(event, SeedStageChanged):
            self.note(self._stage_line(event))
        elif isinstance(event, GovernorAction) and event.action != "snapshot":
            pruned = f"; pruned {', '.join(event.pruned_slots)}" if event.pruned_slots else ""
            self.note(Text.assemble(
                (f"epoch {event.epoch} · ", "dim"),
                (f"governor {event.action}", _GOVERNOR_STYLES[event.action]),
                f" (rollbacks {event.rollbacks}): {event.reason}{pruned}",
            ))
        elif isinstance(event, RunFinished):
            self.note(self._finished_line(event))
        elif isinstance(event, BackendFailed):
            self.note(Text.assemble((f"telemetry backend {event.backend} disabled", "bold red"), f": {event.error}"))

    def update(self, metrics: EpochMetrics) -> None:
        """Show one epoch's metrics (live panel) or print them as one line (plain mode)."""
        if not isinstance(metrics, EpochMetrics):
            raise TypeError(f"TrainingProgress.update: expected an EpochMetrics event, got {type(metrics).__name__}")
        if metrics.epoch > self.total_epochs:  # e.g. a resumed run given more epochs than announced
            self.total_epochs = metrics.epoch
            self._bar.update(self._task, total=self.total_epochs)
        self._bar.update(self._task, completed=max(metrics.epoch, 0))
        self._latest = metrics
        if not self.enabled:
            return
        if self._showing_live:
            assert self._live is not None
            self._live.refresh()
        else:
            self.console.print(self._epoch_line(metrics), soft_wrap=True)

    def note(self, text: str | Text) -> None:
        """Print a one-line message above the live panel (or in sequence in plain mode)."""
        if not isinstance(text, str | Text):
            raise TypeError(f"TrainingProgress.note: expected a str or rich Text, got {type(text).__name__}")
        if not self.enabled:
            return
        line = Text(text) if isinstance(text, str) else text
        self.console.print(line, soft_wrap=True)  # Live keeps its panel below printed lines

    @property
    def _showing_live(self) -> bool:
        return self._live is not None

    # ---------------------------------------------------------- formatting
    def _run_text(self) -> Text:
        if self._started is None:
            return Text("waiting for the run to start…", style="dim")
        s = self._started
        return Text(
            f"task {s.task} · controller {s.controller} · seed {s.seed} · {len(s.slots)} slots · "
            f"host {s.host_params:,} params"
        )

    def _header_text(self) -> Text:
        return Text.assemble((self.title, "bold"), "  ", self._run_text())

    def _stage_line(self, event: SeedStageChanged) -> Text:
        seed = f"{event.slot} {event.blueprint}" if event.blueprint else event.slot
        return Text.assemble(
            (f"epoch {event.epoch} · ", "dim"),
            (seed, "bold"),
            f": {event.from_stage} → ",
            (event.to_stage, stage_style(event.to_stage)),
            f"  ({event.reason})",
        )

    def _finished_line(self, event: RunFinished) -> Text:
        line = Text.assemble(("run finished", "bold"), f" after epoch {event.epoch}: {event.reason}")
        if "test_accuracy" in event.summary:  # absent when the run stopped early
            accuracy = event.summary["test_accuracy"]
            if isinstance(accuracy, int | float) and not isinstance(accuracy, bool):
                line.append(f" · test accuracy {_percent(float(accuracy))}", style="bold")
        return line

    def _epoch_line(self, m: EpochMetrics) -> Text:
        line = Text.assemble(
            (f"epoch {m.epoch}/{self.total_epochs}", "bold"),
            f" · train loss {_loss(m.train_loss)} acc {_percent(m.train_accuracy)}"
            f" · val loss {_loss(m.val_loss)} acc {_percent(m.val_accuracy)}"
            f" · params {m.total_params:,} (host {m.host_params:,} + seeds {m.seed_params:,})",
        )
        for slot_id, snapshot in sorted(m.slots.items()):
            if snapshot.stage == "DORMANT":
                continue  # keep the line short: only slots with something in them
            line.append(f" · {slot_id}")
            if snapshot.blueprint:
                line.append(f" {snapshot.blueprint}")
            line.append(" ")
            line.append(snapshot.stage, style=stage_style(snapshot.stage))
            line.append(f" α={snapshot.alpha:.2f}")
        return line

    def _metrics_table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        m = self._latest
        if m is None:
            table.add_row(Text("waiting for the first epoch…", style="dim"))
            return table
        table.add_row(Text("train", style="bold"), f"loss {_loss(m.train_loss)}", f"acc {_percent(m.train_accuracy)}")
        table.add_row(Text("val", style="bold"), f"loss {_loss(m.val_loss)}", f"acc {_percent(m.val_accuracy)}")
        table.add_row(
            Text("params", style="bold"),
            f"total {m.total_params:,}",
            f"host {m.host_params:,} · seeds {m.seed_params:,}",
        )
        return table

    def _slots_table(self) -> Table:
        table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
        for column in ("slot", "stage", "blueprint", "alpha", "contribution", "epochs in stage"):
            table.add_column(column, justify="right" if column in ("alpha", "contribution") else "left")
        snapshots: dict[str, SlotSnapshot | None] = dict.fromkeys(self._started.slots if self._started else [])
        if self._latest is not None:
            snapshots.update(self._latest.slots)
        for slot_id in sorted(snapshots):
            snapshot = snapshots[slot_id]
            if snapshot is None:
                table.add_row(slot_id, Text("—", style="dim"), "", "", "", "")
                continue
            table.add_row(
                slot_id,
                Text(snapshot.stage, style=stage_style(snapshot.stage)),
                snapshot.blueprint or "",
                f"{snapshot.alpha:.2f}",
                _contribution(snapshot.contribution),
                str(snapshot.epochs_in_stage),
            )
        return table

    def _renderable(self) -> RenderableType:
        parts: list[RenderableType] = [self._run_text(), self._bar, self._metrics_table()]
        if self._started is not None or self._latest is not None:
            parts.append(self._slots_table())
        title = Text(self.title, style="bold")
        return Panel(Group(*parts), title=title, title_align="left", border_style="grey50")
