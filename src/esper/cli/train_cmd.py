"""`esper train`: grow a model on a task (the main job)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from rich.console import Console

from esper.checkpoints.errors import CheckpointError
from esper.training.config import ConfigError, build_config, read_config_file


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="grow a model on a task", description=__doc__)
    parser.add_argument("--task", help="task name (see `esper tasks`); default mnist1d")
    parser.add_argument("--controller", help="heuristic | static | random | policy:PATH; default heuristic")
    parser.add_argument("--epochs", type=int, help="host epochs (default: the task's)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--config", type=Path, help="TOML or JSON config file; flags override it")
    parser.add_argument("--out", type=Path, help="run directory (default runs/TASK-CONTROLLER-seedS)")
    parser.add_argument("--resume", type=Path, help="resume from a run checkpoint (checkpoint.pt)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default cpu")
    parser.add_argument("--data-dir", help="dataset directory (cifar10)")
    parser.add_argument("--text-file", help="corpus for the text task (default: the Python stdlib's source)")
    parser.add_argument(
        "--stop-after", type=int, metavar="N", help="stop after N epochs, leaving a resumable checkpoint"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no live display and no per-epoch lines (the outcome is still printed)",
    )
    parser.add_argument(
        "--watch", action="store_true", help="show the live dashboard (esper watch) while training; needs esper[ui]"
    )
    parser.set_defaults(func=handle)


def _default_out(task: str, controller: str, seed: int) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{task}-{controller}-seed{seed}")
    return Path("runs") / name


def handle(args: argparse.Namespace) -> int:
    from esper.training.trainer import run_training
    from esper.ui.progress import TrainingProgress

    console = Console(stderr=True)
    try:
        file_values = read_config_file(args.config) if args.config else {}
        config = build_config(
            file_values,
            {
                "task": args.task,
                "controller": args.controller,
                "epochs": args.epochs,
                "seed": args.seed,
                "device": args.device,
                "data_dir": args.data_dir,
                "text_file": args.text_file,
            },
            source=str(args.config) if args.config else "arguments",
        )
    except ConfigError as error:
        console.print(f"[red]esper train: {error}[/red]")
        return 2
    if args.resume is not None and not args.resume.is_file():
        console.print(f"[red]esper train: --resume {args.resume}: no such file[/red]")
        return 2
    out = args.out or (args.resume.parent if args.resume else _default_out(config.task, config.controller, config.seed))
    from esper.tasks import default_tasks

    try:
        epochs_hint = config.epochs or default_tasks().get(config.task).defaults.epochs
    except ValueError as error:
        console.print(f"[red]esper train: {error}[/red]")
        return 2
    if args.watch:
        from esper.ui.watch import launch

        problem = launch.cannot_start("esper train --watch")
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
        title = f"esper train {config.task} · {config.controller} → {out}"
        return launch.run_with_dashboard(args.argv, out, title=title)
    progress = TrainingProgress(
        total_epochs=epochs_hint,
        title=f"esper train {config.task} · {config.controller}",
        enabled=not args.no_progress,
    )
    try:
        with progress:
            summary = run_training(
                config, out_dir=out, resume=args.resume, stop_after=args.stop_after, extra_backends=[progress]
            )
    except (ValueError, CheckpointError) as error:
        console.print(f"[red]esper train: {error}[/red]")
        return 2
    except KeyboardInterrupt:
        console.print(f"\n[yellow]interrupted: resume with  esper train --resume {out / 'checkpoint.pt'}[/yellow]")
        return 130
    seeds = ", ".join(f"{s['slot']}:{s['blueprint']}→{s['outcome']}" for s in summary["seeds"]) or "none"
    print(
        f"test accuracy {100 * summary['test_accuracy']:.2f}% · params {summary['total_params']:,} "
        f"(host {summary['host_params']:,} + seeds {summary['seed_params']:,}) · seeds: {seeds} · "
        f"{summary['wall_seconds']:.1f}s\noutputs in {out}/",
        file=sys.stdout,
    )
    return 0
