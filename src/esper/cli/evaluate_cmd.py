"""`esper evaluate`: compare controllers on held-out seeds (10000, 10001, ...).

Every controller grows a model on the task once per seed; the table shows
final test accuracy (mean ± std over seeds), total parameters, and the
accuracy gained over `static` per thousand added parameters. --out DIR
writes DIR/evaluate.json (rows and every run); --json prints the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from esper.checkpoints.errors import CheckpointError
from esper.tasks import DEFAULT_TASK

__all__ = ["handle", "register"]

RESULT_NAME = "evaluate.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compare controllers on held-out seeds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", default=DEFAULT_TASK, help=f"task name (default {DEFAULT_TASK})")
    parser.add_argument(
        "--controllers",
        default="static,random,heuristic",
        help="comma-separated: static, random, heuristic, policy:PATH (default static,random,heuristic)",
    )
    parser.add_argument("--seeds", type=int, default=5, help="number of held-out seeds (default 5)")
    parser.add_argument("--epochs", type=int, help="host epochs per run (default: the task's)")
    parser.add_argument("--max-batches", type=int, help="cap training batches per epoch (quick checks)")
    parser.add_argument("--data-dir", help="dataset directory (cifar10)")
    parser.add_argument("--text-file", help="corpus for the text task (default: the Python stdlib's source)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--out", type=Path, help=f"write DIR/{RESULT_NAME}")
    parser.set_defaults(func=handle)


def _argument_error(args: argparse.Namespace, controllers: list[str]) -> str | None:
    if args.seeds < 1:
        return f"--seeds: expected an int >= 1, got {args.seeds}"
    if args.epochs is not None and args.epochs < 1:
        return f"--epochs: expected an int >= 1, got {args.epochs}"
    if args.max_batches is not None and args.max_batches < 1:
        return f"--max-batches: expected an int >= 1, got {args.max_batches}"
    if args.workers < 1:
        return f"--workers: expected an int >= 1, got {args.workers}"
    if not controllers or any(not c for c in controllers):
        return f"--controllers: expected a comma-separated list of names, got {args.controllers!r}"
    if len(set(controllers)) != len(controllers):
        return f"--controllers: names must be unique, got {controllers}"
    from esper.control.registry import CONTROLLER_NAMES, POLICY_PREFIX

    for name in controllers:
        if name.startswith(POLICY_PREFIX):
            path = Path(name[len(POLICY_PREFIX) :])
            if not path.is_file():
                return f"--controllers: {name}: no such agent file {path}"
        elif name not in CONTROLLER_NAMES:
            return f"--controllers: unknown controller {name!r}; valid: {', '.join(CONTROLLER_NAMES)}, policy:PATH"
    return None


def _check_policy_tasks(controllers: list[str], task: str) -> str | None:
    """A policy must have been trained on this task (its slots and observation layout depend on it)."""
    from esper.control.registry import POLICY_PREFIX
    from esper.growth_rl.agent_io import load_agent

    for name in controllers:
        if name.startswith(POLICY_PREFIX):
            agent = load_agent(name[len(POLICY_PREFIX) :])
            if agent.meta.task != task:
                return f"--controllers: {name} was trained on task {agent.meta.task!r}, not {task!r}"
    return None


def _plan_error(args: argparse.Namespace, controllers: list[str], overrides: dict[str, Any]) -> str | None:
    """Resolve every run's plan now, so a bad task or setting fails before the first run starts."""
    from esper.training.config import ConfigError, build_config
    from esper.training.plan import PlanError, resolve_plan

    try:
        for name in controllers:
            fields = {**overrides, "task": args.task, "epochs": args.epochs, "controller": name}
            resolve_plan(build_config({}, fields, source="arguments"))
    except (ConfigError, PlanError) as error:
        return str(error)
    return None


def handle(args: argparse.Namespace) -> int:
    from esper.training.evaluate import evaluate_controllers, evaluation_seeds, format_table

    err = Console(stderr=True, soft_wrap=True)
    controllers = [c.strip() for c in args.controllers.split(",")]
    overrides: dict[str, Any] = {}
    if args.max_batches is not None:
        overrides["max_batches_per_epoch"] = args.max_batches
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.text_file is not None:
        overrides["text_file"] = args.text_file
    problem = _argument_error(args, controllers) or _plan_error(args, controllers, overrides)
    try:
        problem = problem or _check_policy_tasks(controllers, args.task)
    except CheckpointError as error:
        problem = str(error)
    if problem is not None:
        err.print(f"[red]esper evaluate: {problem}[/red]", highlight=False)
        return 2
    seeds = evaluation_seeds(args.seeds)
    if not args.json:
        err.print(f"esper evaluate: {args.task} · {', '.join(controllers)} · seeds {seeds}", highlight=False)
    try:
        rows, runs = evaluate_controllers(
            args.task, controllers, seeds, epochs=args.epochs, workers=args.workers, overrides=overrides
        )
    except (ValueError, CheckpointError) as error:
        err.print(f"[red]esper evaluate: {error}[/red]", highlight=False)
        return 2
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        document = {"task": args.task, "epochs": args.epochs, "seeds": seeds, "rows": rows, "runs": runs}
        (args.out / RESULT_NAME).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
        if args.out is not None:
            print(f"results in {args.out / RESULT_NAME}", file=sys.stdout)
    return 0
