"""`WatchApp`: the live dashboard over one run directory."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import ClassVar

from rich.console import RenderableType
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from esper.ui.watch import render
from esper.ui.watch.follower import EventFollower, FollowStatus, status_message
from esper.ui.watch.state import RunState
from esper.ui.watch.widgets import EnvTable, HelpScreen, Panel, ProblemsScreen, SeedHistoryScreen, SlotTable

POLL_SECONDS = 0.25
WIDE_COLUMNS = 140  # from this width the event log moves to a column on the right
TALL_ROWS = 32  # below this height (in one column) the log starts hidden: `l` shows it
SHORT_ROWS = 18  # below this height the curves start hidden too: `c` shows them


class WatchApp(App[None]):
    """Follows RUN_DIR/events.jsonl and draws the run; see docs/watch.md for the keys."""

    TITLE = "esper watch"
    CSS = """
    Screen { layout: vertical; }
    #header { height: 3; background: $boost; }
    #main { height: 1fr; }
    #main.-narrow { layout: vertical; }
    #left { width: 1fr; height: 1fr; }
    #main.-narrow #left { height: auto; max-height: 100%; }
    #right { width: 45%; height: 1fr; }
    #main.-narrow #right { width: 100%; }
    Panel { border: round $primary-darken-1; padding: 0 1; height: auto; }
    #slots { height: auto; max-height: 12; }
    #envs { height: auto; max-height: 12; }
    #ppo-stats { height: auto; }
    #ppo-stats Panel { width: 1fr; }
    #log { height: 1fr; min-height: 4; }
    #notice { color: $warning; padding: 1 2; height: auto; }
    #warnings { height: 1; background: $warning 30%; color: $text; }
    .hidden { display: none; }
    HelpScreen, SeedHistoryScreen, ProblemsScreen { align: center middle; }
    #help-body, #history-body, #problems-body {
        width: 90%; height: 90%; border: thick $primary; background: $surface; padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("t", "cycle_type", "type filter"),
        Binding("s", "cycle_slot", "slot filter"),
        Binding("x", "clear_filters", "clear filters", show=False),
        Binding("l", "toggle_log", "log"),
        Binding("c", "toggle_curves", "curves", show=False),
        Binding("w", "problems", "bad lines", show=False),
        Binding("p", "pause", "pause"),
    ]

    def __init__(
        self,
        run_dir: Path | str,
        *,
        title: str | None = None,
        poll_seconds: float = POLL_SECONDS,
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        super().__init__()
        self.process = process  # the training run started by --watch, whose state the status line shows
        if poll_seconds <= 0:
            raise ValueError(f"WatchApp.poll_seconds: expected a positive number, got {poll_seconds!r}")
        self.run_dir = Path(run_dir)
        self.follower = EventFollower(self.run_dir)
        self.state = RunState()
        self.status = FollowStatus.NO_DIRECTORY
        self.poll_seconds = poll_seconds
        self.paused = False
        self.type_filter: str | None = None
        self.slot_filter: str | None = None
        self.show_log: bool | None = None  # None: decided by the terminal's size
        self.show_curves: bool | None = None
        self._drawn_version = -1
        self.longest_poll_seconds = 0.0
        self._arranged_for: str | None = None  # the run kind the layout was last chosen for
        self.title_text = title

    @property
    def main(self) -> Screen[None]:
        """The dashboard's own screen, also while help or a seed history is shown over it."""
        return self.screen_stack[0]

    # ---- layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="header")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Static(id="notice")
                yield SlotTable(id="slots")
                yield EnvTable(id="envs", classes="hidden")
                with Horizontal(id="ppo-stats", classes="hidden"):
                    yield Panel("policy health", lambda w, h: render.policy_health(self.state, w), id="health")
                    yield Panel("action mix", lambda w, h: render.bars(self.state.action_mix(), w), id="mix")
                    yield Panel("reward components", self._paint_rewards, id="rewards")
                yield Panel("curves", self._paint_curves, id="curves")
            with Vertical(id="right"):
                yield Panel("events", self._paint_log, id="log")
        yield Static(id="warnings", classes="hidden")
        yield Footer()

    def on_mount(self) -> None:
        self.main.query_one(SlotTable).focus()  # arrows and enter pick a slot from the start
        self._arrange(self.size.width, self.size.height)
        self.poll()
        self.set_interval(self.poll_seconds, self.poll)

    def on_resize(self, event: Resize) -> None:
        self._arrange(event.size.width, event.size.height)
        self._drawn_version = -1
        self.redraw()

    def _arrange(self, width: int, height: int) -> None:
        """Hide panels as space runs out; the user's l/c choices win over the defaults."""
        wide = width >= WIDE_COLUMNS
        self.main.query_one("#main").set_class(not wide, "-narrow")
        log = self.show_log if self.show_log is not None else (wide or height >= TALL_ROWS)
        # A PPO run's table and three panels fill a small terminal: its curves wait for more rows.
        roomy = height >= (TALL_ROWS if self.state.kind == "ppo" and not wide else SHORT_ROWS)
        curves = self.show_curves if self.show_curves is not None else roomy
        if log and not wide and height < TALL_ROWS and self.show_curves is None:
            curves = False  # a small terminal that asked for the log: give it the curves' room
        self.main.query_one("#right").set_class(not log, "hidden")
        self.main.query_one("#curves").set_class(not curves, "hidden")

    # ---- following ----------------------------------------------------------------------------
    def poll(self) -> None:
        """Read what was appended since the last poll and redraw if anything changed."""
        if self.paused or not self._mounted():
            return
        started = time.perf_counter()
        result = self.follower.poll()
        self.status = result.status
        if result.restarted:
            restarts = self.state.restarts + 1
            self.state = RunState(restarts=restarts)
            self._drawn_version = -1  # the new state counts its versions from 0 again
        for line, event in result.events:
            self.state.apply(event, line)
        self.state.add_problems(result.problems)
        self.redraw()
        # What one poll blocks the event loop for: the worst delay a key press can see.
        self.longest_poll_seconds = max(self.longest_poll_seconds, time.perf_counter() - started)
        if result.more:  # more bytes waiting: keep reading soon, but let keys and drawing in between
            self.set_timer(0.01, self.poll)

    def status_line(self) -> str:
        """What the dashboard is doing, most urgent first (the line is cut at the terminal's width)."""
        parts = []
        if self.paused:
            parts.append("PAUSED (p resumes)")
        if self.process is not None:
            code = self.process.poll()
            if code is None:
                parts.append(f"training running (pid {self.process.pid}; q stops it, resumable)")
            else:
                parts.append(f"training exited with status {code}: q quits and shows its output")
        if self.follower.pending_partial:
            parts.append(f"waiting for the end of a partial line ({self.follower.pending_partial} bytes)")
        if self.state.restarts:
            parts.append(f"the events file was replaced {self.state.restarts}x: showing the newest run")
        if self.status is FollowStatus.FOLLOWING and self.state.events_seen == 0:
            parts.append(f"no events yet in {self.follower.path}: waiting for the run to write its first one")
        else:
            parts.append(status_message(self.status, self.run_dir))
        if self.title_text:  # what --watch started (a PPO run's events do not name its task)
            parts.append(self.title_text)
        return " · ".join(parts)

    # ---- drawing ------------------------------------------------------------------------------
    def _mounted(self) -> bool:
        """False while the app closes: a last timer tick may come after its widgets are gone."""
        return bool(self.screen_stack) and bool(self.main.query("#header"))

    def redraw(self) -> None:
        if not self._mounted():
            return
        state = self.state
        self.main.query_one("#header", Static).update(render.header(state, self.status_line()))
        if state.version == self._drawn_version:
            return
        self._drawn_version = state.version
        ppo = state.kind == "ppo"
        if state.kind != self._arranged_for:
            self._arranged_for = state.kind
            self._arrange(self.size.width, self.size.height)
        notice = self.main.query_one("#notice", Static)
        notice.set_class(state.events_seen > 0, "hidden")
        notice.update(self.status_line())
        self.main.query_one("#slots").set_class(ppo or not state.slots, "hidden")
        self.main.query_one("#envs").set_class(not ppo, "hidden")
        self.main.query_one("#ppo-stats").set_class(not ppo, "hidden")
        if ppo:
            self.main.query_one(EnvTable).show(state)
        else:
            self.main.query_one(SlotTable).show(state)
        for panel in self.main.query(Panel):
            if panel.id != "log":
                panel.paint()
        self._draw_log()
        warnings = self.main.query_one("#warnings", Static)
        warnings.set_class(not state.problem_count, "hidden")
        if state.problems:
            last = state.problems[-1]
            warnings.update(
                Text(f"⚠ {state.problem_count} bad line(s) skipped · latest: line {last.line_number}: {last.message}"
                     " · w lists them", no_wrap=True, overflow="ellipsis")
            )

    def _paint_curves(self, width: int, height: int) -> RenderableType:
        if self.state.kind == "ppo":
            return render.ppo_curves(self.state, width)
        return render.curves(self.state, width)

    def _paint_rewards(self, width: int, height: int) -> RenderableType:
        label, components = self.state.reward_components()
        self.main.query_one("#rewards", Panel).border_title = f"rewards ({label}, per step)"
        return render.bars(components, width, signed=True)

    def _paint_log(self, width: int, height: int) -> RenderableType:
        filters = [f"type={self.type_filter}" if self.type_filter else "",
                   f"slot={self.slot_filter}" if self.slot_filter else ""]
        shown = " ".join(f for f in filters if f) or "all"
        self.main.query_one("#log", Panel).border_title = f"events ({shown}; t/s filter, x clears)"
        # Newest at the bottom, as many as fit: the panel never needs scrolling to show the latest.
        entries = self.state.filtered_log(self.type_filter, self.slot_filter, max(height, 1))
        lines = []
        for entry in entries:
            line = Text(f"{entry.epoch:>4} ", style="grey50", no_wrap=True, overflow="ellipsis")
            where = entry.slot or (f"env{entry.env}" if entry.env is not None else "")
            line.append(f"{entry.type:<21} ", style="cyan")
            if where:
                line.append(f"{where} ", style="bold")
            line.append(entry.text)
            line.truncate(width, overflow="ellipsis")
            lines.append(line)
        return Text("\n").join(lines) if lines else Text("no matching events", style="grey50")

    def _draw_log(self) -> None:
        self.main.query_one("#log", Panel).paint()

    # ---- actions ------------------------------------------------------------------------------
    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_problems(self) -> None:
        self.push_screen(ProblemsScreen(self.state))

    def _next(self, current: str | None, options: list[str]) -> str | None:
        cycle: list[str | None] = [None, *options]
        index = cycle.index(current) if current in cycle else 0
        return cycle[(index + 1) % len(cycle)]

    def action_cycle_type(self) -> None:
        self.type_filter = self._next(self.type_filter, self.state.event_types())
        self._draw_log()

    def action_cycle_slot(self) -> None:
        self.slot_filter = self._next(self.slot_filter, self.state.log_slots())
        self._draw_log()

    def action_clear_filters(self) -> None:
        self.type_filter = self.slot_filter = None
        self._draw_log()

    def action_toggle_log(self) -> None:
        self.show_log = self.main.query_one("#right").has_class("hidden")
        self._arrange(self.size.width, self.size.height)

    def action_toggle_curves(self) -> None:
        self.show_curves = self.main.query_one("#curves").has_class("hidden")
        self._arrange(self.size.width, self.size.height)

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.redraw()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if not isinstance(event.data_table, SlotTable):
            return
        slot = event.row_key.value
        if slot is not None and slot in self.state.slots:
            self.push_screen(SeedHistoryScreen(self.state.slots[slot], max(self.size.width - 8, 30)))
