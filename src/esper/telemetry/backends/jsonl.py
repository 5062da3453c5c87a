"""events.jsonl: one JSON line per event, the run's durable record."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from esper.telemetry.events import TelemetryEvent, event_to_json

EVENTS_FILE_NAME = "events.jsonl"
_TAIL_CHUNK = 4096

_log = logging.getLogger(__name__)


def drop_partial_tail(path: Path) -> int:
    """Cut an unterminated last line (a crash mid-write) off the file; return bytes removed.

    Without this, the first line a resumed run appends would be glued onto the
    fragment and both lines would be lost.
    """
    with open(path, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            handle.seek(start)
            chunk = handle.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            handle.truncate(keep)
        return size - keep


class JsonlBackend:
    """Appends events to a JSONL file, flushing every line.

    Append mode lets a resumed run continue the same file; a flush per line
    means a crash loses at most the line being written.
    """

    name = "jsonl"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            removed = drop_partial_tail(self.path)
            if removed:
                _log.warning(
                    "%s: dropped an unterminated last line (%d bytes) left by a crash", self.path, removed
                )
        self._file = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115 - held for the run

    def write(self, event: TelemetryEvent) -> None:
        if self._file.closed:
            raise RuntimeError(f"JsonlBackend({self.path}): write after close")
        self._file.write(event_to_json(event) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
