"""The live display of `esper train`: a telemetry backend that draws with rich.

On a terminal it shows a progress bar, the latest metrics and a table of
slots (stage coloured as in report.png); elsewhere (CI, pipes) it prints one
plain line per epoch and one per lifecycle change.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from esper.telemetry import events as ev
from esper.ui.colors import stage_style


def _pct(value: float) -> str:
    return "   n/a" if value != value else f"{100 * value:6.2f}%"


class TrainingProgress:
    """Use as a context manager and register as a telemetry backend."""

    name = "progress"

    def __init__(self, total_epochs: int, title: str, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.title = title
        self.total_epochs = total_epochs
        self.live_mode = enabled and self.console.is_terminal
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._task = self._bar.add_task("epochs", total=total_epochs)
        self._latest: ev.EpochMetrics | None = None
        self._live: Live | None = None

    # ------------------------------------------------------------- rendering
    def _slot_table(self, metrics: ev.EpochMetrics) -> Table:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("slot", "stage", "blueprint", "alpha", "contribution"):
            table.add_column(column)
        for slot_id, slot in metrics.slots.items():
            contribution = "—" if slot.contribution is None else f"{slot.contribution:+.2f} pt"
            table.add_row(
                slot_id,
                Text(slot.stage, style=stage_style(slot.stage)),
                slot.blueprint or "—",
                f"{slot.alpha:.2f}",
                contribution,
            )
        return table

    def _metrics_line(self, m: ev.EpochMetrics) -> str:
        return (
            f"epoch {m.epoch}/{self.total_epochs} · train {_pct(m.train_accuracy)} (loss {m.train_loss:.3f}) · "
            f"val {_pct(m.val_accuracy)} (loss {m.val_loss:.3f}) · params {m.total_params:,} "
            f"(host {m.host_params:,} + seeds {m.seed_params:,})"
        )

    def _renderable(self) -> Group:
        parts: list[object] = [Text(self.title, style="bold"), self._bar]
        if self._latest is not None:
            parts += [Text(self._metrics_line(self._latest)), self._slot_table(self._latest)]
        return Group(*parts)  # type: ignore[arg-type]

    # --------------------------------------------------------------- backend
    def write(self, event: ev.TelemetryEvent) -> None:
        if not self.enabled:
            return
        if isinstance(event, ev.EpochMetrics):
            self._latest = event
            self._bar.update(self._task, completed=event.epoch)
            if self._live is not None:
                self._live.update(self._renderable())
            else:
                stages = " ".join(f"{k}:{v.stage[:4]}" for k, v in event.slots.items())
                self.console.print(f"{self._metrics_line(event)} · {stages}", highlight=False)
        elif isinstance(event, ev.SeedStageChanged):
            self.note(
                f"{event.slot}: {event.from_stage} → {event.to_stage} ({event.blueprint or '—'}) — {event.reason}"
            )
        elif isinstance(event, ev.GovernorAction):
            self.note(f"governor {event.action}: {event.reason}")

    def note(self, text: str) -> None:
        """A line above the live area (or a plain line without a terminal)."""
        if self.enabled:
            self.console.print(text, highlight=False, markup=False)

    def close(self) -> None:
        return None

    # ------------------------------------------------------- context manager
    def __enter__(self) -> TrainingProgress:
        if self.live_mode:
            self._live = Live(self._renderable(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None
