"""`esper watch RUN_DIR`: a live terminal dashboard over a run's events.jsonl.

Follows the file as it grows (or replays a finished run): the run's header,
slot lanes with each seed's history, curves, PPO panels and an event log.
A run directory that does not exist yet, or has no events yet, is waited for.
Press ? in the dashboard for its keys. Needs the `ui` extra (textual).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="live dashboard over a run's events (needs esper[ui])",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the --out directory of esper train or esper ppo")
    parser.add_argument(
        "--poll", type=float, default=None, metavar="SECONDS", help="how often to look for new events (default 0.25)"
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from esper.ui.watch import launch

    if args.poll is not None and not args.poll > 0:
        print(f"esper watch: --poll: expected a positive number of seconds, got {args.poll}", file=sys.stderr)
        return 2
    problem = launch.check_run_dir(args.run_dir) or launch.cannot_start("esper watch")
    if problem is not None:
        if not problem.startswith("esper watch:"):
            problem = f"esper watch: {problem}"
        print(problem, file=sys.stderr)
        return 2
    launch.watch(args.run_dir, poll_seconds=args.poll)
    return 0
