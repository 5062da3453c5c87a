"""events.jsonl: one JSON line per event, the run's durable record."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import BinaryIO

from esper.contracts.committed_events import CommittedEvents
from esper.telemetry.events import TelemetryEvent, event_to_json

EVENTS_FILE_NAME = "events.jsonl"
_TAIL_CHUNK = 4096

_log = logging.getLogger(__name__)


def _complete_length(handle: BinaryIO, size: int) -> int:
    """Length of the file without an unterminated last line (what a crash mid-write leaves)."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        handle.seek(start)
        chunk = handle.read(end - start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def drop_partial_tail(path: Path) -> int:
    """Cut an unterminated last line (a crash mid-write) off the file; return bytes removed.

    Without this, the first line a resumed run appends would be glued onto the
    fragment and both lines would be lost.
    """
    with open(path, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        keep = _complete_length(handle, size)
        if keep < size:
            handle.truncate(keep)
        return size - keep


class EventsMismatchError(ValueError):
    """events.jsonl does not hold the history a run checkpoint committed."""


class JsonlBackend:
    """Appends events to a JSONL file, flushing every line.

    Append mode lets a resumed run continue the same file; a flush per line
    means a crash loses at most the line being written. The backend keeps the
    file's length, line count and SHA-256 as it writes, so `commit()` can say
    exactly which prefix a run checkpoint commits and `rewind()` can cut the
    file back to it.

    Opening changes nothing in an existing file (a resume may still be refused
    after it): an unterminated last line left by a crash is cut off only when
    the backend first writes, commits or rewinds.
    """

    name = "jsonl"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - held for the run
        size = self._file.tell()
        with open(self.path, "rb") as handle:
            complete = _complete_length(handle, size)
        self._bytes, self._lines, self._hash = _measure(self.path, complete)
        self._partial_tail = size - complete

    def _cut_partial_tail(self) -> None:
        if self._partial_tail:
            self._file.truncate(self._bytes)
            _log.warning(
                "%s: dropped an unterminated last line (%d bytes) left by a crash", self.path, self._partial_tail
            )
            self._partial_tail = 0

    def _check_open(self, action: str) -> None:
        if self._file.closed:
            raise RuntimeError(f"JsonlBackend({self.path}): {action} after close")

    def write(self, event: TelemetryEvent) -> None:
        self._check_open("write")
        self._cut_partial_tail()
        line = (event_to_json(event) + "\n").encode("utf-8")
        self._file.write(line)
        self._file.flush()
        self._bytes += len(line)
        self._lines += 1
        self._hash.update(line)

    def commit(self) -> CommittedEvents:
        """Make every line written so far durable (flush + fsync) and describe that prefix."""
        self._check_open("commit")
        self._cut_partial_tail()
        self._file.flush()
        os.fsync(self._file.fileno())
        return CommittedEvents(bytes=self._bytes, lines=self._lines, sha256=self._hash.hexdigest())

    def rewind(self, committed: CommittedEvents) -> int:
        """Cut the file back to the `committed` prefix; return the bytes removed.

        Raises EventsMismatchError (naming the file, changing nothing) when the
        file is shorter than the prefix or its first bytes are not the committed ones.
        """
        self._check_open("rewind")
        size, lines, digest = self.verify(committed)
        self._file.truncate(committed.bytes)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._bytes, self._lines, self._hash = committed.bytes, lines, digest
        self._partial_tail = 0
        return size - committed.bytes

    def verify(self, committed: CommittedEvents) -> tuple[int, int, hashlib._Hash]:
        """Check that the file starts with the `committed` prefix; raise EventsMismatchError if not.

        Returns the file's size and the prefix's line count and running hash.
        """
        self._check_open("verify")
        self._file.flush()
        size = self.path.stat().st_size
        if size < committed.bytes:
            raise EventsMismatchError(
                f"{self.path}: holds {size} bytes but the checkpoint committed {committed.bytes} bytes "
                f"({committed.lines} events): this is not the history of the checkpoint's run"
            )
        _, lines, digest = _measure(self.path, committed.bytes)
        if lines != committed.lines or digest.hexdigest() != committed.sha256:
            raise EventsMismatchError(
                f"{self.path}: its first {committed.bytes} bytes differ from the events the checkpoint "
                f"committed ({lines} lines found, {committed.lines} committed; SHA-256 "
                f"{digest.hexdigest()[:12]}… instead of {committed.sha256[:12]}…): "
                "this is not the history of the checkpoint's run"
            )
        return size, lines, digest

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def _measure(path: Path, length: int) -> tuple[int, int, hashlib._Hash]:
    """Line count and running SHA-256 of the first `length` bytes of `path`."""
    digest = hashlib.sha256()
    lines = 0
    remaining = length
    with open(path, "rb") as handle:
        while remaining:
            chunk = handle.read(min(remaining, 1 << 20))
            if not chunk:
                raise EventsMismatchError(f"{path}: shorter than {length} bytes while reading it")
            digest.update(chunk)
            lines += chunk.count(b"\n")
            remaining -= len(chunk)
    return length, lines, digest
