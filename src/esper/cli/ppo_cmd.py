"""`esper ppo`: learn a growth controller with PPO over many short training runs.

Each round runs one episode (--episode-length host epochs) in each of --envs
environments, spread over --workers processes, then updates the policy.
Writes OUT/agent.pt (after every round), OUT/events.jsonl and OUT/learning.png.
--rounds is the total: `--resume OUT/agent.pt --rounds 20` continues a
10-round run for 10 more rounds, exactly as an uninterrupted 20-round run.
A --config file (TOML or JSON) may set any PPORunConfig key (top-level keys
and the tables train, reward, ppo, policy, imitation); flags override it.
--show-config prints every setting the run would use (defaults included) as
JSON, itself a valid --config file, and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from esper.checkpoints.errors import CheckpointError
from esper.training.config import ConfigError, read_config_file

__all__ = ["format_imitation", "format_round", "handle", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ppo",
        help="learn a growth controller with PPO",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", help="task name (default mnist1d-blind)")
    parser.add_argument("--envs", type=int, help="environments per round (default 8)")
    parser.add_argument("--rounds", type=int, help="total PPO rounds (default 10)")
    parser.add_argument("--episode-length", type=int, help="host epochs per episode (default 25)")
    parser.add_argument("--workers", type=int, help="environment worker processes; 0 = in this process (default 2)")
    parser.add_argument("--seed", type=int, help="base seed (default 0)")
    parser.add_argument("--reward", choices=["shaped", "simplified", "sparse"], help="reward mode (default shaped)")
    parser.add_argument(
        "--imitate",
        type=int,
        metavar="N",
        help="clone the heuristic from N demonstration episodes per env before PPO "
        "(imitation.rounds; default 4; 0: pure PPO)",
    )
    parser.add_argument("--config", type=Path, help="TOML or JSON file of PPORunConfig keys; flags override it")
    parser.add_argument(
        "--show-config", action="store_true", help="print every setting (file, flags and defaults) as JSON and exit"
    )
    parser.add_argument("--out", type=Path, help="output directory (default: the --resume file's directory)")
    parser.add_argument("--resume", type=Path, help="continue from an agent checkpoint (OUT/agent.pt)")
    parser.add_argument("--no-progress", action="store_true", help="plain log lines instead of a live display")
    parser.add_argument(
        "--watch", action="store_true", help="show the live dashboard (esper watch) while training; needs esper[ui]"
    )
    parser.set_defaults(func=handle)


def _merged(args: argparse.Namespace, file_values: dict[str, Any]) -> dict[str, Any]:
    merged = dict(file_values)
    flags = {
        "task": args.task,
        "envs": args.envs,
        "rounds": args.rounds,
        "episode_length": args.episode_length,
        "workers": args.workers,
        "seed": args.seed,
    }
    merged.update({key: value for key, value in flags.items() if value is not None})
    # These flags each set one key inside an (optional) table of the file.
    for table, key, value in (("reward", "mode", args.reward), ("imitation", "rounds", args.imitate)):
        if value is None:
            continue
        settings: Any = {}
        if table in merged:
            settings = merged[table]
        if not isinstance(settings, dict):
            raise ConfigError(f"{table}: expected a table of settings, got {type(settings).__name__}")
        merged[table] = {**settings, key: value}
    return merged


def format_round(stats: Any, total_rounds: int) -> str:
    return (
        f"round {stats.round + 1}/{total_rounds} · return {stats.mean_return:+.3f} · "
        f"val acc {100 * stats.mean_final_val_accuracy:.2f}% · entropy {stats.entropy:.3f} · "
        f"KL {stats.approx_kl:.4f} · clip {stats.clip_fraction:.3f} · "
        f"expl var {stats.explained_variance:+.3f} · {stats.wall_seconds:.1f}s"
    )


def format_imitation(summary: dict[str, float]) -> str:
    return (
        f"imitation · {summary['episodes']:.0f} expert episodes · expert return "
        f"{summary['expert_mean_return']:+.3f} · val acc {100 * summary['expert_mean_final_val_accuracy']:.2f}% · "
        f"p(expert action) {summary['expert_prob']:.3f} · p(expert decision) {summary['decision_prob']:.3f} · "
        f"{summary['wall_seconds']:.1f}s"
    )


def handle(args: argparse.Namespace) -> int:
    from esper.distributed.launch import torchrun_rank

    # The PPO policy and its environments' host models run on the CPU.
    with torchrun_rank("cpu", command="esper ppo"):
        return _handle(args)


def _handle(args: argparse.Namespace) -> int:
    from esper import distributed
    from esper.growth_rl.agent_io import AgentMismatchError
    from esper.growth_rl.ppo_run import DistributedPPOError
    from esper.growth_rl.training import AGENT_NAME, PPORunConfig, config_error_message, train_ppo

    err = Console(stderr=True, soft_wrap=True)
    try:
        file_values = read_config_file(args.config) if args.config else {}
        config = PPORunConfig.model_validate(_merged(args, file_values))
    except ConfigError as error:
        err.print(f"[red]esper ppo: {error}[/red]", highlight=False)
        return 2
    except ValidationError as error:
        source = str(args.config) if args.config else "arguments"
        err.print(f"[red]esper ppo: {source}: {config_error_message(error)}[/red]", highlight=False)
        return 2
    if args.show_config:
        print(json.dumps(config.model_dump(mode="json"), indent=2), flush=True)
        return 0
    if args.resume is not None and not args.resume.is_file():
        err.print(f"[red]esper ppo: --resume {args.resume}: no such file[/red]", highlight=False)
        return 2
    if args.out is None and args.resume is None:
        err.print("[red]esper ppo: --out DIR is required (or --resume DIR/agent.pt)[/red]", highlight=False)
        return 2
    out: Path = args.out if args.out is not None else args.resume.parent
    from esper.training.plan import PlanError, lookup_task, resolve_plan

    try:
        lookup_task(config.task)
    except PlanError as error:
        err.print(f"[red]esper ppo: {error}[/red]", highlight=False)
        return 2
    try:
        # The environments' run plan (the nested train table), resolved before any process starts.
        resolve_plan(config.env_config().train)
    except PlanError as error:
        source = str(args.config) if args.config else "arguments"
        err.print(f"[red]esper ppo: {source}: train.{error}[/red]", highlight=False)
        return 2
    if args.watch and distributed.active():
        err.print("[red]esper ppo: --watch is not available under torchrun; run `esper watch DIR` beside it[/red]")
        return 2
    if args.watch:
        from esper.ui.watch import launch

        problem = launch.cannot_start("esper ppo --watch")
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
        return launch.run_with_dashboard(args.argv, out, title=f"esper ppo {config.task} → {out}")
    live = sys.stdout.isatty() and not args.no_progress and distributed.is_main()
    progress = Progress(
        TextColumn("[bold]esper ppo[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not live,
    )
    task_id = progress.add_task(config.task, total=config.rounds)
    ran: list[int] = []

    def on_round(stats: Any) -> None:
        ran.append(stats.round)
        line = format_round(stats, config.rounds)
        if live:
            progress.console.print(line, highlight=False)
            progress.update(task_id, completed=stats.round + 1)
        else:
            print(line, flush=True)

    def on_imitation(summary: dict[str, float]) -> None:
        line = format_imitation(summary)
        if live:
            progress.console.print(line, highlight=False)
        else:
            print(line, flush=True)

    try:
        with progress:
            history = train_ppo(config, out, resume=args.resume, on_round=on_round, on_imitation=on_imitation)
    except (CheckpointError, AgentMismatchError, DistributedPPOError) as error:
        err.print(f"[red]esper ppo: {error}[/red]", highlight=False)
        return 2
    except KeyboardInterrupt:
        if (out / AGENT_NAME).is_file():
            err.print(f"\ninterrupted: resume with  esper ppo --resume {out / AGENT_NAME} --rounds {config.rounds}")
        else:
            # Before the first round's agent.pt (demonstrations, cloning or round 0) there is nothing to resume.
            err.print("\ninterrupted before the first round was saved: nothing to resume; run the same command again")
        return 130
    if not distributed.is_main():
        return 0
    if ran:
        print(f"{len(history)} rounds done · outputs in {out}/", flush=True)
    else:
        print(f"nothing to do: the agent already completed {len(history)} of {config.rounds} rounds", flush=True)
    return 0
