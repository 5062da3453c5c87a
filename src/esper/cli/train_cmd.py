"""`esper train`: grow a model on a task (the main job)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from esper.checkpoints.errors import CheckpointError
from esper.tasks import DEFAULT_TASK
from esper.training.config import ConfigError, TrainConfig, build_config, read_config_file
from esper.training.run_files import CHECKPOINT_NAME, EVENTS_NAME, REPORT_NAME, RUN_FILE_NAMES

# Exit codes: 0 the run completed (or stopped where --stop-after asked), 2 bad input,
# 3 the governor aborted the run (training kept breaking after every rollback), 130 interrupted.
EXIT_GOVERNOR_ABORT = 3
EXIT_INTERRUPTED = 130


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="grow a model on a task", description=__doc__)
    parser.add_argument("--task", help=f"task name (see `esper tasks`); default {DEFAULT_TASK}")
    parser.add_argument("--controller", help="heuristic | static | random | policy:PATH; default heuristic")
    parser.add_argument("--epochs", type=int, help="host epochs (default: the task's)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--config", type=Path, help="TOML or JSON config file; flags override it")
    parser.add_argument("--out", type=Path, help="run directory (default runs/TASK-CONTROLLER-seedS)")
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="DIR/checkpoint.pt",
        help="continue a run in its own directory; only --epochs may change (to extend it)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (only its events, checkpoint, summary and report)",
    )
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
    parser.add_argument(
        "--show-config",
        action="store_true",
        help="print every value the run would use (flags and --config over the task's defaults over the global "
        "defaults; with --resume, the values the run started with) as JSON and exit; nothing is written",
    )
    parser.set_defaults(func=handle)


def _default_out(task: str, controller: str, seed: int, overwrite: bool) -> Path:
    """runs/TASK-CONTROLLER-seedS, or the first free runs/...-2, -3, ... when it holds a run.

    The default directory is Esper's choice, so a second `./run.sh` gets a new one
    instead of a refusal; an explicit --out that holds a run is refused (or replaced
    with --overwrite), and with --overwrite the unsuffixed default is replaced.
    """
    base = Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{task}-{controller}-seed{seed}")
    if overwrite:
        return base
    candidate, number = base, 1
    while any((candidate / name).exists() for name in RUN_FILE_NAMES):
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def _fail(message: str) -> int:
    return _fail_with(2, message)


def _fail_with(code: int, message: str) -> int:
    # Plain print, not rich: one line however long, and no markup read into paths or messages.
    print(f"esper train: {message}", file=sys.stderr, flush=True)
    return code


def _os_error(error: OSError, fallback: Path) -> str:
    """`PATH: cause` for any OS error (disk full, permission denied, ...)."""
    cause = error.strerror if error.strerror else str(error)
    if error.filename is not None:
        return f"{error.filename}: {cause}"
    return f"{fallback}: writing the run failed: {cause}"


_FLAGS = {
    "task": "--task",
    "controller": "--controller",
    "epochs": "--epochs",
    "seed": "--seed",
    "device": "--device",
    "data_dir": "--data-dir",
    "text_file": "--text-file",
}


def _os_error_behind(error: BaseException) -> OSError | None:
    """The OSError that caused `error`, if any: torch.save reports a failed write (disk full) as a
    RuntimeError raised while the OSError is being handled."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def handle(args: argparse.Namespace) -> int:
    from esper.distributed.launch import torchrun_rank

    fallback = args.out or (args.resume.parent if args.resume else Path("."))
    try:
        with torchrun_rank(args.device or "cpu", command="esper train"):
            return _handle(args)
    except OSError as error:
        return _fail(_os_error(error, fallback))
    except RuntimeError as error:
        cause = _os_error_behind(error)
        if cause is None:
            raise
        return _fail(_os_error(cause, fallback))


def _render_report(out_dir: Path, *, replace: bool = False) -> list[str]:
    """Draw report.png from the run's events (unless one is there and not `replace`); returns the names written.

    The command draws it, after the training package has written everything else, so training needs
    no plotting code; a process stopped before this leaves a finished run that a resume completes.
    """
    from esper.telemetry.replay import read_events
    from esper.ui.report import render_report

    if not replace and (out_dir / REPORT_NAME).is_file():
        return []
    render_report(read_events(out_dir / EVENTS_NAME), out_dir / REPORT_NAME)
    return [REPORT_NAME]


def _show_config(config: TrainConfig, args: argparse.Namespace, labels: dict[str, str]) -> int:
    """Print the plan as JSON; nothing is trained or written."""
    from esper.training.plan import PlanError, resolve_plan
    from esper.training.preflight import RunInputError, validate_run_inputs

    try:
        if args.resume is not None:
            out = args.out if args.out is not None else args.resume.parent
            inputs = validate_run_inputs(config, out, resume=args.resume, labels=labels)
            plan = inputs.plan
        else:
            plan = resolve_plan(config)
    except (PlanError, RunInputError, CheckpointError) as error:
        return _fail(str(error))
    # The host's output size (the text task's vocabulary) is filled in once the data loads.
    print(json.dumps(plan.as_record(), indent=2), flush=True)
    return 0


def _handle(args: argparse.Namespace) -> int:
    from esper.growth_rl.agent_io import AgentMismatchError
    from esper.training.preflight import RunInputError, validate_run_inputs
    from esper.training.trainer import GOVERNOR_ABORT, complete_outputs, run_training
    from esper.ui.progress import TrainingProgress

    flags = {
        "task": args.task,
        "controller": args.controller,
        "epochs": args.epochs,
        "seed": args.seed,
        "device": args.device,
        "data_dir": args.data_dir,
        "text_file": args.text_file,
    }
    try:
        # Flags alone first, so that a bad flag is blamed on the command line, not on the file.
        build_config({}, flags, source="command line")
        file_values = read_config_file(args.config) if args.config else {}
        config = build_config(file_values, flags, source=str(args.config) if args.config else "command line")
    except ConfigError as error:
        return _fail(str(error))
    labels = {key: str(args.config) for key in file_values}
    labels.update({key: _FLAGS[key] for key, value in flags.items() if value is not None})
    if args.show_config:
        return _show_config(config, args, labels)
    from esper import distributed

    if args.resume is not None:
        out = args.out if args.out is not None else args.resume.parent
    else:
        out = args.out or distributed.on_main(
            lambda: _default_out(config.task, config.controller, config.seed, args.overwrite)
        )
    try:
        # Under torchrun rank 0 checks the run directory and every rank takes its verdict.
        inputs = distributed.on_main(
            lambda: validate_run_inputs(config, out, resume=args.resume, overwrite=args.overwrite, labels=labels)
        )
    except (RunInputError, CheckpointError, AgentMismatchError) as error:
        return _fail(str(error))
    if inputs.nothing_to_do:
        written = distributed.on_main(lambda: complete_outputs(inputs.out_dir) + _render_report(inputs.out_dir))
        if not distributed.is_main():
            return 0
        finished = f" (wrote the missing {', '.join(written)})" if written else ""
        print(
            f"nothing to do: the run in {inputs.out_dir}/ already trained {inputs.trained_epochs} of "
            f"{inputs.total_epochs} epochs{finished}; extend it with --epochs N (N > {inputs.trained_epochs})"
        )
        return 0
    config = inputs.config
    if args.watch and distributed.active():
        return _fail("--watch is not available under torchrun; run `esper watch RUN_DIR` beside it")
    if args.watch:
        from esper.ui.watch import launch

        problem = launch.cannot_start("esper train --watch")
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
        title = f"esper train {config.task} · {config.controller} → {inputs.out_dir}"
        return launch.run_with_dashboard(args.argv, inputs.out_dir, title=title)
    progress = TrainingProgress(
        total_epochs=inputs.total_epochs,
        title=f"esper train {config.task} · {config.controller}",
        enabled=not args.no_progress and distributed.is_main(),
    )
    try:
        with progress:
            summary = run_training(
                config,
                out_dir=inputs.out_dir,
                resume=args.resume,
                stop_after=args.stop_after,
                extra_backends=[progress] if distributed.is_main() else [],
                overwrite=args.overwrite,
            )
            distributed.on_main(lambda: _render_report(inputs.out_dir, replace=True))
    except (ValueError, CheckpointError) as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        checkpoint = inputs.out_dir / CHECKPOINT_NAME
        if checkpoint.is_file():
            message = f"interrupted: resume with  esper train --resume {checkpoint}"
        else:
            message = f"interrupted before the run's first checkpoint: nothing in {inputs.out_dir}/ to resume"
        print("\n" + message, file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    if not distributed.is_main():
        return 0 if not summary["finish_reason"].startswith(GOVERNOR_ABORT) else EXIT_GOVERNOR_ABORT
    if summary["finish_reason"].startswith(GOVERNOR_ABORT):
        return _fail_with(EXIT_GOVERNOR_ABORT, f"{summary['finish_reason']}; outputs in {inputs.out_dir}/")
    seeds = ", ".join(f"{s['slot']}:{s['blueprint']}→{s['outcome']}" for s in summary["seeds"]) or "none"
    print(
        f"test accuracy {100 * summary['test_accuracy']:.2f}% · params {summary['total_params']:,} "
        f"(host {summary['host_params']:,} + seeds {summary['seed_params']:,}) · seeds: {seeds} · "
        f"{summary['wall_seconds']:.1f}s\noutputs in {inputs.out_dir}/",
        file=sys.stdout,
    )
    from esper.training.growth_reference import reference_line

    reference = reference_line(config, summary)
    if reference is not None:
        print(reference, file=sys.stdout)
    return 0
