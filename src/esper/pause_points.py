"""Test seam: hold the process at a named write point so a test can interrupt it exactly there.

Durability is claimed "at any instant", and the only honest test of that is a
real signal at each instant that matters. This seam lets a test choose one:

    ESPER_TEST_PAUSE_AT="<point>:<n>"   the n-th time (from 1) the process reaches <point> ...
    ESPER_TEST_PAUSE_MARKER=<file>      ... it creates <file> and sleeps until a signal ends it.

The test waits for the marker file, then sends SIGINT or SIGKILL. Points:

- "epoch-events": an epoch's events are all written, its checkpoint is not.
- "<file>:before-rename": `atomic_write` wrote and fsynced the temporary copy of
  <file> (checkpoint.pt, summary.json, report.png), not yet renamed onto it.
- "<file>:after-rename": the rename happened, the directory is not yet fsynced.

Without ESPER_TEST_PAUSE_AT (always, outside tests) a point costs one
environment lookup and does nothing.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

PAUSE_AT_VARIABLE = "ESPER_TEST_PAUSE_AT"
MARKER_VARIABLE = "ESPER_TEST_PAUSE_MARKER"
# Long enough for any test to send its signal, short enough that a forgotten process ends by itself.
MAX_PAUSE_SECONDS = 120.0

_reached: Counter[str] = Counter()


def pause_point(name: str) -> None:
    """Mark that the process reached write point `name`; pause here if the test seam asks to."""
    spec = os.environ.get(PAUSE_AT_VARIABLE)
    if not spec:
        return
    point, _, count = spec.rpartition(":")
    if not point or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{PAUSE_AT_VARIABLE}={spec!r}: expected <point>:<n> with n >= 1")
    _reached[name] += 1
    if point != name or int(count) != _reached[name]:
        return
    marker = os.environ.get(MARKER_VARIABLE)
    if not marker:
        raise RuntimeError(f"{PAUSE_AT_VARIABLE} is set but {MARKER_VARIABLE} names no marker file")
    Path(marker).write_text(f"{name}:{count}\n", encoding="utf-8")
    time.sleep(MAX_PAUSE_SECONDS)
    raise RuntimeError(f"test seam: paused at {name}:{count} for {MAX_PAUSE_SECONDS:.0f}s and no signal came")
