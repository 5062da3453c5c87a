"""`esper frontier`: test metric vs parameters, static hosts against growth started from them.

Trains the task's static host at each --widths multiplier (every width of the
host scaled by one factor) and growth from each of those hosts with each
--controllers controller, --seeds seeds each, in --workers processes. Writes
OUT/frontier.json (every run and the mean ± std per width and controller,
with machine info and the command) and OUT/frontier.png; each run keeps its
own directory OUT/runs/NAME. An existing non-empty OUT is refused unless
--overwrite. frontier.json is written only once every run has finished.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from esper.tasks import DEFAULT_TASK

__all__ = ["handle", "register"]

DOCUMENT_NAME = "frontier.json"
PLOT_NAME = "frontier.png"
COMPUTE_PLOT_NAME = "compute.png"
DEFAULT_WIDTHS = "0.25,0.5,1,2"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "frontier",
        help="test metric vs parameters: static hosts at several widths vs growth from them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", default=DEFAULT_TASK, help=f"task name (default {DEFAULT_TASK})")
    parser.add_argument(
        "--widths", default=DEFAULT_WIDTHS, help=f"comma-separated host width multipliers (default {DEFAULT_WIDTHS})"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per (width, controller) (default 3)")
    parser.add_argument("--seed-start", type=int, default=0, help="first seed; seeds are S, S+1, ... (default 0)")
    parser.add_argument(
        "--controllers", default="heuristic", help="comma-separated growth controllers: heuristic, random "
        "(default heuristic); the static host always runs"
    )
    parser.add_argument(
        "--static-widths", default="", help="comma-separated extra width multipliers trained only as static "
        "hosts (frontier points where no growth starts, e.g. as large as a grown model)"
    )
    parser.add_argument(
        "--growth-config", type=Path, help="TOML or JSON file of settings for the growth runs only: a "
        "[heuristic] table, blueprints, max_seeds, seed_budget_ratio, a [gates] table"
    )
    parser.add_argument(
        "--variant", action="append", default=[], metavar="LABEL=FILE", help="an extra growth group: the "
        "heuristic with FILE's settings (as --growth-config), its runs labelled LABEL; repeatable"
    )
    parser.add_argument(
        "--keep-finished", action="store_true", help="in an existing --out, keep every run whose directory "
        "holds a completed run of the same configuration instead of training it again"
    )
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the task's)")
    parser.add_argument("--workers", type=int, help="parallel worker processes (default: the CPU count)")
    parser.add_argument("--out", type=Path, help="output directory (default runs/frontier-TASK)")
    parser.add_argument("--overwrite", action="store_true", help="allow an existing non-empty --out")
    parser.add_argument("--max-batches-per-epoch", type=int, help="cap training batches per epoch (quick checks)")
    parser.add_argument("--text-file", type=Path, help="UTF-8 corpus for the text task (default: Python's stdlib)")
    parser.add_argument("--data-dir", type=Path, help="dataset directory (cifar10)")

    def one_line_error(message: str) -> NoReturn:
        print(f"esper frontier: {message}", file=sys.stderr)
        raise SystemExit(2)

    # argparse's own errors (a non-integer --seeds, say) print one line too, not the usage block.
    parser.error = one_line_error
    parser.set_defaults(func=handle)


def _parse_widths(text: str, flag: str = "--widths") -> tuple[list[float] | None, str | None]:
    widths: list[float] = []
    for part in text.split(","):
        item = part.strip()
        try:
            value = float(item)
        except ValueError:
            return None, f"{flag}: expected comma-separated numbers > 0, got {item!r} in {text!r}"
        if not value > 0 or value == float("inf"):
            return None, f"{flag}: expected numbers > 0, got {item!r} in {text!r}"
        widths.append(value)
    if len(set(widths)) != len(widths):
        return None, f"{flag}: multipliers must be unique, got {text!r}"
    return widths, None


def _parse_static_widths(text: str, widths: list[float]) -> tuple[list[float] | None, str | None]:
    """--static-widths: empty, or multipliers > 0 that are not already in --widths."""
    if not text.strip():
        return [], None
    extra, problem = _parse_widths(text, "--static-widths")
    if problem is not None or extra is None:
        return None, problem
    shared = sorted(set(extra) & set(widths))
    if shared:
        return None, f"--static-widths: {', '.join(f'{w:g}' for w in shared)} already in --widths (which trains " \
            "static hosts too)"
    return extra, None


def _argument_error(args: argparse.Namespace, controllers: list[str]) -> str | None:
    from esper.control.registry import CONTROLLER_NAMES
    from esper.training.config import ConfigError, build_config
    from esper.training.plan import PlanError, resolve_plan

    for flag, value, low in (
        ("--seeds", args.seeds, 1),
        ("--epochs", args.epochs, 1),
        ("--workers", args.workers, 1),
        ("--max-batches-per-epoch", args.max_batches_per_epoch, 1),
        ("--seed-start", args.seed_start, 0),
    ):
        if value is not None and value < low:
            return f"{flag}: expected an int >= {low}, got {value}"
    try:
        # The static host's plan: the task, epochs and batch cap every run of the frontier shares.
        fields = {"task": args.task, "epochs": args.epochs, "max_batches_per_epoch": args.max_batches_per_epoch}
        resolve_plan(build_config({}, fields, source="arguments"))
    except (ConfigError, PlanError) as error:
        return str(error)
    growth = [name for name in CONTROLLER_NAMES if name != "static"]
    if not controllers or any(not c for c in controllers):
        return f"--controllers: expected a comma-separated list of names, got {args.controllers!r}"
    if len(set(controllers)) != len(controllers):
        return f"--controllers: names must be unique, got {args.controllers!r}"
    for name in controllers:
        if name == "static":
            return "--controllers: the static host always runs; name only growth controllers: " + ", ".join(growth)
        if name not in growth:
            return f"--controllers: unknown controller {name!r}; valid: {', '.join(growth)}"
    if args.text_file is not None and not args.text_file.is_file():
        return f"--text-file: no such file {args.text_file}"
    if args.data_dir is not None and not args.data_dir.is_dir():
        return f"--data-dir: no such directory {args.data_dir}"
    return None


def _out_error(out: Path, overwrite: bool) -> str | None:
    if out.exists() and not out.is_dir():
        return f"--out {out}: exists and is not a directory"
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        return (
            f"--out {out}: directory exists and is not empty; pass --overwrite to replace its frontier "
            "(or --keep-finished to keep its completed runs)"
        )
    return None


_LABEL = re.compile(r"[A-Za-z0-9_.-]+")


def _parse_variants(items: list[str], controllers: list[str]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """--variant LABEL=FILE items: label -> checked growth settings."""
    from esper.control.registry import CONTROLLER_NAMES
    from esper.training.config import read_config_file
    from esper.training.frontier import check_growth_config

    variants: dict[str, dict[str, Any]] = {}
    for item in items:
        label, sep, file = item.partition("=")
        if not sep or not file:
            return {}, f"--variant: expected LABEL=FILE, got {item!r}"
        if not _LABEL.fullmatch(label):
            return {}, f"--variant: label {label!r} must be letters, digits, '_', '.' or '-'"
        if label in CONTROLLER_NAMES or label in controllers or label in variants:
            return {}, f"--variant: label {label!r} is already a controller or another variant's label"
        try:
            variants[label] = check_growth_config(read_config_file(Path(file)), f"--variant {label}={file}")
        except ValueError as error:  # ConfigError is a ValueError
            return {}, str(error)
    return variants, None


def _command(
    args: argparse.Namespace,
    widths: list[float],
    static_widths: list[float],
    controllers: list[str],
    out: Path,
    workers: int,
) -> str:
    """The command with every value spelled out, so a reader can rerun exactly this frontier."""
    words = ["esper", "frontier", "--task", args.task, "--widths", ",".join(f"{w:g}" for w in widths)]
    words += ["--seeds", str(args.seeds), "--seed-start", str(args.seed_start)]
    words += ["--controllers", ",".join(controllers), "--workers", str(workers), "--out", str(out)]
    for variant in args.variant:
        words += ["--variant", variant]
    for flag, value in (
        ("--epochs", args.epochs),
        ("--max-batches-per-epoch", args.max_batches_per_epoch),
        ("--text-file", args.text_file),
        ("--data-dir", args.data_dir),
        ("--growth-config", args.growth_config),
    ):
        if value is not None:
            words += [flag, str(value)]
    if static_widths:
        words += ["--static-widths", ",".join(f"{w:g}" for w in static_widths)]
    if args.overwrite:
        words.append("--overwrite")
    if args.keep_finished:
        words.append("--keep-finished")
    return shlex.join(words)


def _table(document: dict[str, Any]) -> Table:
    metric = document["metric"]
    table = Table(title=f"esper frontier · {document['task']} · {len(document['spec']['seeds'])} seeds")
    metric_column = "test accuracy %" if metric == "test_accuracy" else "bits per char"
    unit = "points" if metric == "test_accuracy" else "bits"
    columns = ("width", "controller", "params", metric_column, f"vs own host ({unit})", f"vs frontier ({unit})",
               "grew", "train FLOPs", "wall s")
    for column in columns:
        table.add_column(column, justify="left" if column == "controller" else "right")
    scale = 100.0 if metric == "test_accuracy" else 1.0
    digits = 2 if metric == "test_accuracy" else 3

    def difference(value: float | None) -> str:
        return "—" if value is None else f"{scale * value:+.{digits}f}"

    for row in document["groups"]:
        static = row["controller"] == "static"
        table.add_row(
            f"×{row['width']:g}",
            row["controller"],
            f"{row['total_params_mean']:,.0f}",
            f"{scale * row['metric_mean']:.{digits}f} ± {scale * row['metric_std']:.{digits}f}",
            "" if static else difference(row["metric_minus_own_host"]),
            "" if static else difference(row["metric_minus_frontier"]),
            f"{row['runs_that_grew']}/{row['runs']}",
            "—" if row["training_flops_mean"] is None else f"{row['training_flops_mean']:.3g}",
            f"{row['wall_seconds_mean']:.1f}",
        )
    return table


def handle(args: argparse.Namespace) -> int:
    from esper.checkpoints.atomic import atomic_write_bytes
    from esper.training.config import read_config_file
    from esper.training.frontier import (
        FrontierRunError,
        FrontierSpec,
        build_document,
        check_growth_config,
        load_splits,
        plan,
        run_jobs,
        width_overrides,
    )
    from esper.training.frontier_plot import render_compute, render_frontier

    err = Console(stderr=True, soft_wrap=True, highlight=False)

    def fail(message: str, code: int = 2) -> int:
        print(f"esper frontier: {message}", file=sys.stderr)
        return code

    widths, problem = _parse_widths(args.widths)
    static_widths: list[float] | None = []
    if problem is None and widths is not None:
        static_widths, problem = _parse_static_widths(args.static_widths, widths)
    controllers = [c.strip() for c in args.controllers.split(",")]
    problem = problem or _argument_error(args, controllers)
    growth_config: dict[str, Any] = {}
    variants: dict[str, dict[str, Any]] = {}
    if problem is None:
        variants, problem = _parse_variants(args.variant, controllers)
    if problem is None and args.growth_config is not None:
        try:
            source = f"--growth-config {args.growth_config}"
            growth_config = check_growth_config(read_config_file(args.growth_config), source)
        except ValueError as error:  # ConfigError is a ValueError
            problem = str(error)
    out: Path = args.out or Path("runs") / f"frontier-{args.task}"
    problem = problem or _out_error(out, args.overwrite or args.keep_finished)
    if problem is not None:
        return fail(problem)
    assert widths is not None and static_widths is not None
    workers = args.workers or os.cpu_count() or 1
    spec = FrontierSpec(
        task=args.task,
        widths=tuple(widths),
        seeds=tuple(range(args.seed_start, args.seed_start + args.seeds)),
        controllers=(*controllers, *variants),
        epochs=args.epochs,
        max_batches_per_epoch=args.max_batches_per_epoch,
        text_file=None if args.text_file is None else str(args.text_file),
        data_dir=None if args.data_dir is None else str(args.data_dir),
        static_widths=tuple(static_widths),
        growth_config=growth_config,
        variants=variants,
        keep_finished=args.keep_finished,
    )
    from esper.training.plan import lookup_task

    try:
        width_overrides(lookup_task(args.task), [*widths, *static_widths])
        load_splits(spec)  # the data every run will load: a missing dataset fails here, before any disk change
    except (ValueError, OSError) as error:
        return fail(str(error))
    except KeyboardInterrupt:
        return fail("interrupted before any run started; nothing written", 130)
    jobs = plan(spec, out)
    command = _command(args, widths, static_widths, controllers, out, workers)
    err.print(f"esper frontier: {len(jobs)} runs in {workers} workers → {out}")
    (out / "runs").mkdir(parents=True, exist_ok=True)

    def progress(done: int, total: int, record: dict[str, Any]) -> None:
        metric = (
            f"{record['bits_per_char']:.3f} bits/char" if "bits_per_char" in record
            else f"{100 * record['test_accuracy']:.2f}%"
        )
        err.print(
            f"[{done}/{total}] width {record['width']:g} · {record['controller']} · seed {record['seed']}: "
            f"{metric} · {record['total_params']:,} params · {record['seeds_germinated']} seeds · "
            f"{record['wall_seconds']:.0f} s"
        )

    started = time.perf_counter()
    try:
        runs = run_jobs(jobs, workers, progress)
    except KeyboardInterrupt:
        return fail(f"interrupted; {out / DOCUMENT_NAME} not written (finished runs stay in {out / 'runs'})", 130)
    except FrontierRunError as error:
        return fail(f"{error}; {out / DOCUMENT_NAME} not written", 1)
    document = build_document(
        spec, runs, command=command, workers=workers, wall_seconds=time.perf_counter() - started
    )
    # The picture first: frontier.json, written last, marks a finished frontier.
    render_frontier(document, out / PLOT_NAME)
    render_compute(document, out / COMPUTE_PLOT_NAME)
    atomic_write_bytes(out / DOCUMENT_NAME, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
    # Piped into a file (how benchmark logs are kept) the table keeps its rows on one line each.
    Console(width=None if sys.stdout.isatty() else 132).print(_table(document))
    print(f"written {out / DOCUMENT_NAME}, {out / PLOT_NAME} and {out / COMPUTE_PLOT_NAME}")
    return 0
