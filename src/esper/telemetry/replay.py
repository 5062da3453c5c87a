"""Reading events.jsonl back: all at once (strict) or following a live file."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from esper.telemetry.events import TelemetryEvent, parse_event

_READ_CHUNK = 1 << 16


def _parse_line(raw: bytes, path: Path, line_number: int) -> TelemetryEvent:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}:{line_number}: not valid UTF-8 ({error.reason})") from error
    if not text.strip():
        raise ValueError(f"{path}:{line_number}: empty line (every line must be one event)")
    try:
        return parse_event(text)
    except ValueError as error:
        raise ValueError(f"{path}:{line_number}: {error}") from error


def iter_events(
    path: Path | str,
    follow: bool = False,
    poll_seconds: float = 0.25,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[TelemetryEvent]:
    """Yield events from a JSONL file as complete lines become available.

    follow=False: read to the end of the file and stop; an unterminated last
    line is an error (a writer always ends lines with a newline).
    follow=True: like `tail -f`: wait for the file to appear and for more
    lines, polling every `poll_seconds`, until `should_stop()` returns True
    (checked whenever no complete line is waiting; without it, follow until
    the caller stops iterating). A partial last line is held back until its
    newline arrives.
    Any bad line raises ValueError with the file path and its line number.
    """
    path = Path(path)
    if poll_seconds <= 0:
        raise ValueError(f"iter_events.poll_seconds: expected a positive number, got {poll_seconds!r}")
    if not follow and not path.exists():
        raise FileNotFoundError(f"telemetry events file not found: {path}")

    while follow and not path.exists():
        if should_stop is not None and should_stop():
            return
        time.sleep(poll_seconds)

    line_number = 0
    buffer = b""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_READ_CHUNK)
            if chunk:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    line_number += 1
                    yield _parse_line(raw, path, line_number)
                continue
            if not follow:
                if buffer:
                    raise ValueError(
                        f"{path}:{line_number + 1}: unterminated last line (the writer stopped mid-line)"
                    )
                return
            if should_stop is not None and should_stop():
                return
            time.sleep(poll_seconds)


def read_events(path: Path | str) -> list[TelemetryEvent]:
    """Every event of a finished (or paused) JSONL file; any bad line raises ValueError with its number."""
    return list(iter_events(path))
