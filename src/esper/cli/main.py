"""Entry point of the `esper` command: one module per subcommand.

Each module in COMMANDS exposes `register(subparsers)`, which adds its parser
and sets `handler(args) -> int` as the default `func`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from importlib import import_module

import esper
from esper.interrupts import ctrl_c_remembered

COMMANDS: tuple[str, ...] = (
    "esper.cli.train_cmd",
    "esper.cli.tasks_cmd",
    "esper.cli.blueprints_cmd",
    "esper.cli.audit_cmd",
    "esper.cli.export_cmd",
    "esper.cli.compare_cmd",
    "esper.cli.frontier_cmd",
    "esper.cli.bench_cmd",
    "esper.cli.ppo_cmd",
    "esper.cli.evaluate_cmd",
    "esper.cli.summarize_cmd",
    "esper.cli.watch_cmd",
)


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad arguments; keep that, but say which command."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="esper", description="Morphogenetic training: networks that grow while they train.")
    parser.add_argument("--version", action="version", version=f"esper {esper.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS:
        import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except KeyboardInterrupt:
        # Commands that hold a run say what was saved and how to resume; a Ctrl-C anywhere
        # else (while the commands are imported, the arguments parsed, or in a command with
        # nothing to save) has nothing to lose and says only that it stopped.
        print("esper: interrupted", file=sys.stderr)
        return 130


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The command line as typed: `--watch` re-runs it in a child process.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with ctrl_c_remembered():
            code = int(args.func(args))
        sys.stdout.flush()  # output still buffered meets a closed pipe here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader of our output went away (`esper ... | head`): stop quietly, as Unix tools do.
        # stdout is pointed at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
