"""`esper compare`: static vs heuristic vs random growth vs a widened static host."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from esper.tasks import DEFAULT_TASK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="is growth worth it? static vs grown vs widened", description=__doc__
    )
    parser.add_argument("--task", default=DEFAULT_TASK, help=f"task name (default {DEFAULT_TASK})")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...); default 3")
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the task's)")
    parser.add_argument("--out", type=Path, help="directory for the runs and compare.json (default runs/compare-TASK)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    parser.add_argument("--max-batches-per-epoch", type=int, help="cap training batches per epoch (quick checks)")
    parser.add_argument("--data-dir", help="dataset directory (cifar10)")
    parser.add_argument("--text-file", help="corpus for the text task (default: the Python stdlib's source)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from esper.training.compare import compare
    from esper.training.plan import PlanError, lookup_task

    console = Console(stderr=True)
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        console.print("[red]esper compare: --seeds and --epochs must be >= 1[/red]")
        return 2
    try:
        lookup_task(args.task)
    except PlanError as error:
        console.print(f"[red]esper compare: {error}[/red]", highlight=False, soft_wrap=True)
        return 2
    out = args.out or Path("runs") / f"compare-{args.task}"
    options = {
        "max_batches_per_epoch": args.max_batches_per_epoch,
        "data_dir": args.data_dir,
        "text_file": args.text_file,
    }
    extra = {key: value for key, value in options.items() if value is not None}
    try:
        rows = compare(
            args.task,
            list(range(args.seeds)),
            epochs=args.epochs,
            out_dir=out,
            extra=extra,
            progress=lambda text: console.print(f"[dim]running {text}…[/dim]"),
        )
    except ValueError as error:  # e.g. the task's data is missing
        console.print(f"[red]esper compare: {error}[/red]", highlight=False, soft_wrap=True)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(rows, indent=2), file=sys.stdout)
        return 0
    table = Table(title=f"esper compare · {args.task} · {args.seeds} seeds")
    for column in ("variant", "test accuracy", "params", "wall s"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for row in rows:
        table.add_row(
            row["variant"],
            f"{100 * row['test_accuracy_mean']:.2f} ± {100 * row['test_accuracy_std']:.2f}%",
            f"{row['total_params_mean']:,.0f}",
            f"{row['wall_seconds_mean']:.1f}",
        )
    Console().print(table)
    print(f"written to {out / 'compare.json'}")
    return 0
