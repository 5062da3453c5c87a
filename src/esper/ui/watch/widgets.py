"""Textual widgets and screens of the dashboard; they draw `render` output of a RunState."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.events import Resize
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from esper.ui.watch import render
from esper.ui.watch.state import RunState, SlotView

KEYS: tuple[tuple[str, str], ...] = (
    ("?", "show or hide this help"),
    ("q", "quit (with --watch: stops the training the way Ctrl-C does, leaving a resumable checkpoint)"),
    ("↑ ↓", "select a slot (train runs)"),
    ("enter", "open the selected slot's seed history (esc closes it)"),
    ("t", "event log: show only the next event type (cycles through the types seen; then all)"),
    ("s", "event log: show only the next slot (cycles through the slots seen; then all)"),
    ("x", "event log: clear both filters"),
    ("l", "show or hide the event log"),
    ("c", "show or hide the curves"),
    ("w", "list the skipped (malformed) lines"),
    ("p", "pause or resume following the file"),
)


class SlotTable(DataTable[Text | str]):
    """One row per slot: stage, blueprint, alpha, contribution and a lane of stages over time."""

    FIXED_WIDTH = 48  # every column but the lane, with separators
    state: RunState | None = None

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = False
        self.add_column("slot", key="slot")
        self.add_column("stage", key="stage")
        self.add_column("blueprint", key="blueprint")
        self.add_column("α", key="alpha")
        self.add_column("contrib", key="contribution")
        self.add_column("lane (stage per epoch, newest right)", key="lane")

    def on_resize(self, event: Resize) -> None:
        if self.state is not None:
            self.show(self.state)

    def show(self, state: RunState) -> None:
        self.state = state
        keep = self.cursor_row
        lane_width = max(self.size.width - self.FIXED_WIDTH, 8)
        self.clear()
        for slot_id in state.slot_order():
            view = state.slots[slot_id]
            stage, blueprint, alpha, contribution, _ = render.slot_cells(view)
            self.add_row(slot_id, stage, blueprint, alpha, contribution, render.lane(view, lane_width), key=slot_id)
        if self.row_count:
            self.move_cursor(row=min(keep, self.row_count - 1))

    def selected_slot(self) -> str | None:
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return None if row_key.value is None else str(row_key.value)


class EnvTable(DataTable[Text | str]):
    """One row per PPO environment."""

    def on_mount(self) -> None:
        self.cursor_type = "none"
        for label in ("env", "val acc", "return", "seeds", "last action"):
            self.add_column(label, key=label)

    def show(self, state: RunState) -> None:
        self.clear()
        for row in render.env_rows(state.envs):
            self.add_row(*row, key=row[0])


Painter = Callable[[int, int], RenderableType]  # (content width, content height) -> what to show


class Panel(Static):
    """A bordered Static drawn by a painter that fits its content to the panel's current size."""

    def __init__(self, title: str, painter: Painter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = title
        self.painter = painter

    def paint(self) -> None:
        width = self.content_size.width or max(self.app.size.width - 4, 20)
        height = self.content_size.height or 5
        self.update(self.painter(width, height))

    def on_resize(self, event: Resize) -> None:
        self.paint()


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        table = Table(title="esper watch: keys", show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, what in KEYS:
            table.add_row(key, what)
        yield VerticalScroll(Static(table), id="help-body")


class SeedHistoryScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter,q", "dismiss", "close")]

    def __init__(self, view: SlotView, width: int) -> None:
        super().__init__()
        self.view = view
        self.width = width

    def compose(self) -> ComposeResult:
        yield VerticalScroll(Static(render.seed_history(self.view, self.width), id="seed-history"), id="history-body")


class ProblemsScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,w,q", "dismiss", "close")]

    def __init__(self, state: RunState) -> None:
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        lines = [Text(f"{self.state.problem_count} malformed lines skipped (newest {len(self.state.problems)} shown)")]
        lines += [Text(f"line {p.line_number}: {p.message}", style="yellow") for p in self.state.problems]
        yield VerticalScroll(Static(Text("\n").join(lines)), id="problems-body")
