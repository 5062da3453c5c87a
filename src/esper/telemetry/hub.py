"""The per-run telemetry hub: fans events out to backends, isolates failures.

One hub per run (never a process-wide singleton), so two runs in one process
never see each other's events. `TelemetryHub([])` is the do-nothing hub.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, runtime_checkable

from esper.telemetry.events import BackendFailed, TelemetryEvent

_log = logging.getLogger(__name__)


@runtime_checkable
class Backend(Protocol):
    """A sink for events. `write` may raise; the hub then disables it."""

    name: str

    def write(self, event: TelemetryEvent) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendFailure:
    """A backend error the hub absorbed."""

    backend: str
    during: Literal["write", "close"]
    error: str  # "ExceptionType: message"
    event_type: str | None  # the event being written, None while closing


class TelemetryHub:
    """Sends each event to every healthy backend; a failing backend is dropped.

    Training must never stop because a dashboard, a disk or a logging service
    failed, so a backend that raises is disabled for the rest of the run, the
    failure is recorded in `failures`, and a `backend_failed` event goes to the
    remaining backends.
    """

    def __init__(self, backends: Iterable[Backend], run_id: str = "") -> None:
        if not isinstance(run_id, str):
            raise TypeError(f"TelemetryHub.run_id: expected a str, got {type(run_id).__name__}")
        self._all: list[Backend] = list(backends)
        for index, backend in enumerate(self._all):
            if not isinstance(backend, Backend):
                raise TypeError(
                    f"TelemetryHub.backends[{index}]: expected an object with name, write() and close(), "
                    f"got {type(backend).__name__}"
                )
        self.run_id = run_id
        self.failures: list[BackendFailure] = []
        self._active: list[Backend] = list(self._all)
        self._closed = False
        # Vectorised environments may emit from several threads; keep lines whole and ordered.
        self._lock = threading.Lock()

    @property
    def backends(self) -> tuple[Backend, ...]:
        """Backends still receiving events."""
        return tuple(self._active)

    @property
    def closed(self) -> bool:
        return self._closed

    def emit(self, event: TelemetryEvent) -> None:
        """Send one event to every healthy backend, stamping the hub's run id if the event has none."""
        if not isinstance(event, TelemetryEvent):
            raise TypeError(f"TelemetryHub.emit: expected a TelemetryEvent, got {type(event).__name__}")
        with self._lock:
            if self._closed:
                raise RuntimeError(f"TelemetryHub.emit: hub is closed (event type {event.type!r})")
            if not event.run_id and self.run_id:
                event = event.model_copy(update={"run_id": self.run_id})
            pending: deque[TelemetryEvent] = deque([event])
            while pending:
                self._deliver(pending.popleft(), pending)

    def _deliver(self, event: TelemetryEvent, pending: deque[TelemetryEvent]) -> None:
        for backend in list(self._active):
            try:
                backend.write(event)
            except Exception as error:  # a backend failure must never stop training: isolate it
                self._active.remove(backend)
                self._record(backend, "write", error, event.type)
                # Each failure removes one backend, so this queue always drains.
                pending.append(
                    BackendFailed(
                        epoch=event.epoch,
                        run_id=event.run_id,
                        env=event.env,
                        backend=backend.name,
                        error=_format_error(error),
                    )
                )

    def close(self) -> None:
        """Close every backend (failed ones too, to release files); idempotent, never raises for a backend."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for backend in self._all:
                try:
                    backend.close()
                except Exception as error:  # closing must not hide the run's own outcome
                    self._record(backend, "close", error, None)
            self._active.clear()

    def __enter__(self) -> TelemetryHub:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _record(
        self, backend: Backend, during: Literal["write", "close"], error: Exception, event_type: str | None
    ) -> None:
        failure = BackendFailure(
            backend=backend.name, during=during, error=_format_error(error), event_type=event_type
        )
        self.failures.append(failure)
        _log.warning(
            "telemetry backend %r failed during %s and was disabled: %s", backend.name, during, failure.error
        )


def _format_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
