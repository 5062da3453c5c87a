"""`esper bench`: our code against its plain-PyTorch equivalent, as ratios.

Each contender pair runs interleaved in one process after a warm-up, with
the garbage collector off and torch's thread count fixed; the reported
number is the median of per-round ratios (ours / plain; for the fused
counterfactual pass, plain / ours as a speedup). By default times are the
process's CPU time with one torch thread, which other work on the machine
does not disturb; checkpoint saves always use the wall clock (they wait on
fsync). Results go to a JSON file together with a description of the
machine. The exit status is 0 whether or not a goal is met: the table and
the file say which were.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from esper.bench.runner import print_table, run_benchmarks, suite_names, write_results
from esper.bench.timing import BenchError

__all__ = ["DEFAULT_OUT", "handler", "register"]

DEFAULT_OUT = Path("benchmarks") / "results.json"
_PIPE_WIDTH = 140


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark our overhead against plain PyTorch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the results document as JSON on stdout")
    parser.add_argument("--quick", action="store_true", help="few repeats (smoke runs; numbers are rough)")
    parser.add_argument("--tiny", action="store_true", help="toy model sizes (smoke tests only)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results file (default {DEFAULT_OUT})")
    parser.add_argument(
        "--suite",
        action="extend",
        nargs="+",
        choices=suite_names(),
        metavar="NAME",
        help=f"run only these suites (default: all): {', '.join(suite_names())}",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads during the run (default: 1)")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: process CPU time, needs --threads 1 (default); wall: elapsed time",
    )
    parser.set_defaults(func=handler)


def _argument_error(args: argparse.Namespace) -> str | None:
    if args.threads < 1:
        return f"--threads: expected an int >= 1, got {args.threads}"
    if args.clock == "cpu" and args.threads != 1:
        return f"--clock cpu needs --threads 1 (idle worker threads would count as work), got {args.threads}"
    if args.out.is_dir():
        return f"--out: expected a file path, got the directory {args.out}"
    return None


def handler(args: argparse.Namespace) -> int:
    error = _argument_error(args)
    if error is not None:
        print(f"esper bench: {error}", file=sys.stderr)
        return 2
    status = Console(stderr=True)
    try:
        document = run_benchmarks(
            args.suite,
            quick=args.quick,
            tiny=args.tiny,
            threads=args.threads,
            clock=args.clock,
            progress=status.print,
        )
    except BenchError as failure:
        print(f"esper bench: {failure}", file=sys.stderr)
        return 1
    path = write_results(document, args.out)
    if args.json:
        sys.stdout.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
    else:
        console = Console()
        # Not a terminal (a pipe, a log file): rich would assume 80 columns and wrap every cell.
        print_table(document, console if console.is_terminal else Console(width=_PIPE_WIDTH))
    status.print(f"results written to {path}")
    return 0
