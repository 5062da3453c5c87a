"""`esper audit PATH... [--json] [--self-test]`: would these files load with weights_only=True?

Exit codes: 0 every file is compatible; 1 at least one is incompatible or
unsafe; 2 at least one is missing or unreadable (or the arguments are wrong).
The audit never executes a file's pickled code.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

EXIT_COMPATIBLE = 0
EXIT_INCOMPATIBLE = 1
EXIT_UNREADABLE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="explain why checkpoint files would fail torch.load(weights_only=True), without loading them",
        description=(
            "Statically audit .pt files: say whether torch.load(weights_only=True) reads each one and, if"
            " not, list every offending object with its path and a suggested conversion. Nothing in the"
            " files is executed. Exit code 0: all compatible, 1: some incompatible or unsafe, 2: some"
            " unreadable or missing."
        ),
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="checkpoint files to audit")
    parser.add_argument("--json", action="store_true", help="print a JSON list of reports instead of text")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="save every kind of esper checkpoint to a temporary directory and audit them (no PATH needed)",
    )
    parser.set_defaults(func=handler)


def exit_code(statuses: list[str]) -> int:
    """2 if anything is unreadable, else 1 if anything is incompatible, else 0."""
    if "unreadable" in statuses:
        return EXIT_UNREADABLE
    if "incompatible" in statuses:
        return EXIT_INCOMPATIBLE
    return EXIT_COMPATIBLE


def handler(args: argparse.Namespace) -> int:
    if args.self_test:
        if args.paths:
            print("esper audit: give either PATH... or --self-test, not both", file=sys.stderr)
            return EXIT_UNREADABLE
        # Imported only here: the self-test builds models, which plain audits never need.
        from esper.checkpoints.self_test import run_self_test

        return int(run_self_test(json_output=args.json))
    if not args.paths:
        print("esper audit: at least one PATH is required (or --self-test)", file=sys.stderr)
        return EXIT_UNREADABLE

    from esper.checkpoints.audit import audit_file, render_rich

    reports = [audit_file(path) for path in args.paths]
    if args.json:
        print(json.dumps([report.to_dict() for report in reports], indent=2))
    else:
        console = Console(highlight=False, soft_wrap=True)
        for index, report in enumerate(reports):
            if index:
                console.print()
            console.print(render_rich(report))
    return exit_code([report.status.value for report in reports])
