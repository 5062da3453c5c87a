"""`esper summarize RUN_DIR`: rebuild RUN_DIR/summary.json from RUN_DIR/events.jsonl.

The events are the run's complete record, so the summary a finished run
wrote is rebuilt exactly. A run stopped early (--stop-after, Ctrl-C) has no
run_finished event: its rebuilt summary holds the last epoch's numbers but no
test numbers, which only a finished run records in its events. The file is
replaced atomically. Exit 0 on success, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esper.training.run_files import EVENTS_NAME, SUMMARY_NAME

__all__ = ["handler", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "summarize",
        help="rebuild a run's summary.json from its events.jsonl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory (holds events.jsonl)")
    parser.set_defaults(func=handler)


def _fail(message: str) -> int:
    print(f"esper summarize: {message}", file=sys.stderr, flush=True)
    return 2


def handler(args: argparse.Namespace) -> int:
    from esper.telemetry.replay import read_events
    from esper.training.summary import summarize, write_summary

    run_dir: Path = args.run_dir
    if not run_dir.exists():
        return _fail(f"RUN_DIR {run_dir}: no such directory")
    if not run_dir.is_dir():
        return _fail(f"RUN_DIR {run_dir}: is a file, expected a run directory")
    events = run_dir / EVENTS_NAME
    if not events.is_file():
        return _fail(f"RUN_DIR {run_dir}: holds no {EVENTS_NAME}, nothing to rebuild the summary from")
    try:
        recorded = read_events(events)  # a bad line's error names the file and line
        try:
            summary = summarize(recorded)
        except ValueError as error:
            return _fail(f"{events}: {error}")
        write_summary(run_dir / SUMMARY_NAME, summary)
    except ValueError as error:
        return _fail(str(error))
    except OSError as error:
        path = error.filename if error.filename is not None else run_dir / SUMMARY_NAME
        return _fail(f"{path}: {error.strerror or error}")
    finished = "finish_reason" in summary
    print(f"summary rebuilt from {events} -> {run_dir / SUMMARY_NAME}")
    if not finished:
        print("note: the run has not finished (no run_finished event): the summary has no test numbers")
    return 0
