"""Follow a run's events.jsonl incrementally: only new bytes are read on each poll.

The follower keeps the byte offset of the first unread line and holds back a
partial last line until its newline arrives (a writer flushes whole lines, but a
reader can catch one mid-write). A line that does not parse is reported with its
line number and skipped, so one bad line never hides the rest of the run. When
the file is replaced (a fresh run in the same directory deletes and recreates
it) or shrinks, the follower starts over and says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from esper.telemetry.events import TelemetryEvent, parse_event

EVENTS_FILE_NAME = "events.jsonl"
# Bytes read per poll: bounds the work of one refresh so a 10,000-epoch file
# loads in steps while the dashboard keeps answering keys.
DEFAULT_MAX_BYTES_PER_POLL = 1 << 18
_MAX_SHOWN_LINE = 60


class FollowStatus(Enum):
    NO_DIRECTORY = "no_directory"  # the run directory does not exist (yet)
    NOT_A_DIRECTORY = "not_a_directory"  # the path exists but is a file
    NO_EVENTS_FILE = "no_events_file"  # the directory exists, events.jsonl does not (yet)
    FOLLOWING = "following"


@dataclass(frozen=True)
class LineProblem:
    """A line of events.jsonl that was skipped, and why."""

    line_number: int
    message: str


@dataclass
class PollResult:
    status: FollowStatus
    events: list[tuple[int, TelemetryEvent]] = field(default_factory=list)  # (line number, event)
    problems: list[LineProblem] = field(default_factory=list)
    restarted: bool = False  # the file was replaced or truncated: the caller must forget what it read
    more: bool = False  # bytes are waiting beyond the per-poll budget: poll again soon

    def status_message(self, run_dir: Path) -> str:
        return status_message(self.status, run_dir)


def status_message(status: FollowStatus, run_dir: Path) -> str:
    """One line saying what the follower is waiting for."""
    if status is FollowStatus.NO_DIRECTORY:
        return f"run directory {run_dir} does not exist yet: waiting for a run to start there"
    if status is FollowStatus.NOT_A_DIRECTORY:
        return f"{run_dir} is a file, not a run directory: waiting for it to become one"
    if status is FollowStatus.NO_EVENTS_FILE:
        return f"no events yet: waiting for {run_dir / EVENTS_FILE_NAME} to appear"
    return f"following {run_dir / EVENTS_FILE_NAME}"


class EventFollower:
    """Reads the complete lines appended to RUN_DIR/events.jsonl since the last poll."""

    def __init__(self, run_dir: Path | str, max_bytes_per_poll: int = DEFAULT_MAX_BYTES_PER_POLL) -> None:
        if max_bytes_per_poll < 1:
            raise ValueError(f"EventFollower.max_bytes_per_poll: expected a positive int, got {max_bytes_per_poll!r}")
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / EVENTS_FILE_NAME
        self.max_bytes_per_poll = max_bytes_per_poll
        self.offset = 0  # bytes consumed: everything before it was a complete line
        self.line_number = 0  # complete lines consumed
        self._partial = b""  # an unterminated last line, held until its newline arrives
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file being read

    @property
    def pending_partial(self) -> int:
        """Bytes of an unterminated last line waiting for their newline."""
        return len(self._partial)

    def _reset(self) -> None:
        self.offset = 0
        self.line_number = 0
        self._partial = b""
        self._identity = None

    def poll(self) -> PollResult:
        if not self.run_dir.exists():
            return PollResult(FollowStatus.NO_DIRECTORY, restarted=self._forget())
        if not self.run_dir.is_dir():
            return PollResult(FollowStatus.NOT_A_DIRECTORY, restarted=self._forget())
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below, after stat and read
        except FileNotFoundError:
            return PollResult(FollowStatus.NO_EVENTS_FILE, restarted=self._forget())
        with handle:
            stat = os.fstat(handle.fileno())
            identity = (stat.st_dev, stat.st_ino)
            restarted = False
            consumed = self.offset + len(self._partial)
            if self._identity is not None and (identity != self._identity or stat.st_size < consumed):
                self._reset()
                restarted = True
            self._identity = identity
            handle.seek(self.offset + len(self._partial))
            chunk = handle.read(self.max_bytes_per_poll)
            more = self.offset + len(self._partial) + len(chunk) < stat.st_size
        result = PollResult(FollowStatus.FOLLOWING, restarted=restarted, more=more)
        if not chunk:
            return result
        data = self._partial + chunk
        end = data.rfind(b"\n")
        if end < 0:
            self._partial = data
            return result
        self._partial = data[end + 1 :]
        for raw in data[:end].split(b"\n"):
            self.line_number += 1
            self._parse(raw, result)
        self.offset += end + 1
        return result

    def _forget(self) -> bool:
        """The file went away: anything read before belongs to a run that is gone."""
        had = self._identity is not None
        self._reset()
        return had

    def _parse(self, raw: bytes, result: PollResult) -> None:
        number = self.line_number
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            result.problems.append(LineProblem(number, f"not valid UTF-8 ({error.reason}); line skipped"))
            return
        if not text.strip():
            result.problems.append(LineProblem(number, "empty line; skipped"))
            return
        try:
            event = parse_event(text)
        except ValueError as error:
            shown = text if len(text) <= _MAX_SHOWN_LINE else text[: _MAX_SHOWN_LINE - 3] + "..."
            result.problems.append(LineProblem(number, f"{error}; line skipped: {shown}"))
            return
        result.events.append((number, event))
