"""Short coloured one-liners for the things an operator wants to see happen.

Per-epoch metrics are left to the progress display; this backend reports
changes: run start/finish, seed lifecycle, governor actions, executed
controller decisions, backend failures and (verbose) failed gates.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from esper.telemetry.events import (
    BackendFailed,
    ControllerDecision,
    GateEvaluated,
    GovernorAction,
    RunFinished,
    RunStarted,
    SeedStageChanged,
    TelemetryEvent,
)

# One colour per SeedStage name (events validate stage names, so indexing is safe).
_STAGE_STYLES = {
    "UNKNOWN": "dim",
    "DORMANT": "dim",
    "GERMINATED": "cyan",
    "TRAINING": "cyan",
    "BLENDING": "blue",
    "HOLDING": "blue",
    "FOSSILIZED": "bold green",
    "PRUNED": "bold red",
    "EMBARGOED": "red",
    "RESETTING": "dim",
}
_GOVERNOR_STYLES = {"snapshot": "dim", "rollback": "bold yellow", "abort": "bold red"}


class ConsoleBackend:
    """Prints lifecycle changes to a rich console (stdout by default)."""

    name = "console"

    def __init__(self, console: Console | None = None, verbose: bool = False) -> None:
        if console is not None and not isinstance(console, Console):
            raise TypeError(
                f"ConsoleBackend.console: expected a rich Console or None, got {type(console).__name__}"
            )
        self.console = console if console is not None else Console(highlight=False)
        self.verbose = verbose

    def write(self, event: TelemetryEvent) -> None:
        line = self.format(event)
        if line is not None:
            self.console.print(line)

    def format(self, event: TelemetryEvent) -> Text | None:
        """The line printed for `event`, or None when this backend ignores it."""
        body = self._body(event)
        if body is None:
            return None
        where = f"epoch {event.epoch}" if event.env is None else f"env {event.env} · epoch {event.epoch}"
        return Text.assemble((f"[{where}] ", "dim"), body)

    def _body(self, event: TelemetryEvent) -> Text | None:
        # Text.assemble never parses markup, so reasons containing "[...]" print as written.
        if isinstance(event, SeedStageChanged):
            style = _STAGE_STYLES[event.to_stage]
            seed = f"{event.slot} {event.blueprint}" if event.blueprint else event.slot
            return Text.assemble(
                (seed, "bold"), f" {event.from_stage} → ", (event.to_stage, style), f"  {event.reason}"
            )
        if isinstance(event, GateEvaluated):
            if event.passed or not self.verbose:
                return None
            failed = ", ".join(event.checks_failed) or "no check named"
            return Text.assemble(
                (f"{event.slot} gate {event.gate}", "bold"),
                (f" failed for {event.target_stage}", "yellow"),
                f" (score {event.score:.3g}; failed: {failed}) {event.message}",
            )
        if isinstance(event, GovernorAction):
            pruned = f" pruned {', '.join(event.pruned_slots)}" if event.pruned_slots else ""
            return Text.assemble(
                (f"governor {event.action}", _GOVERNOR_STYLES[event.action]),
                f" (rollbacks {event.rollbacks}){pruned}: {event.reason}",
            )
        if isinstance(event, ControllerDecision):
            if not event.executed or (event.op == "WAIT" and not self.verbose):
                return None
            target = " ".join(part for part in (event.slot, event.blueprint) if part)
            return Text.assemble((f"{event.controller} {event.op}", "magenta"), f" {target}  {event.reason}")
        if isinstance(event, RunStarted):
            return Text.assemble(
                ("run started", "bold"),
                f" task {event.task}, controller {event.controller}, seed {event.seed}, "
                f"{len(event.slots)} slots, host {event.host_params:,} params",
            )
        if isinstance(event, RunFinished):
            return Text.assemble(("run finished", "bold"), f": {event.reason}")
        if isinstance(event, BackendFailed):
            disabled = f"telemetry backend {event.backend} disabled"
            return Text.assemble((disabled, "bold red"), f": {event.error}")
        return None

    def close(self) -> None:
        # The console may belong to the caller (e.g. a progress display): never close it here.
        return None
