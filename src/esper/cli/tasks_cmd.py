"""`esper tasks`: list the registered tasks (rich table, or `--json` for machines)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from esper.tasks import DEFAULT_TASK, Task, default_tasks


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tasks",
        help="list the available tasks",
        description="List the registered tasks: topology, host, default epochs and what each one is.",
    )
    parser.add_argument("--json", action="store_true", help="print the tasks as JSON")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    tasks = list(default_tasks())
    if args.json:
        print(json.dumps([task_record(task) for task in tasks], indent=2))
        return 0
    table = Table(title="Esper tasks")
    for column in ("name", "topology", "host", "epochs", "description"):
        table.add_column(column, justify="right" if column == "epochs" else "left")
    for task in tasks:
        name = f"{task.name} (default)" if task.name == DEFAULT_TASK else task.name
        table.add_row(name, task.topology, host_summary(task), str(task.defaults.epochs), task.description)
    Console().print(table)
    return 0


def task_record(task: Task) -> dict[str, Any]:
    """Everything listed about a task, as JSON-ready primitives."""
    return {
        "name": task.name,
        "default": task.name == DEFAULT_TASK,
        "topology": task.topology,
        "description": task.description,
        "host_kind": task.host_kind,
        "host_config": task.host_config,
        "host": host_summary(task),
        "defaults": task.defaults.model_dump(),
        "default_blueprints": list(task.default_blueprints),
    }


def host_summary(task: Task) -> str:
    """A one-line description of the host, e.g. "cnn 1-D [32, 64, 64] k3 pool batch-norm"."""
    config = task.host_config
    if task.host_kind == "cnn" and {"spatial_dims", "widths", "kernel_size", "pool", "norm"} <= config.keys():
        pooling = "pool" if config["pool"] else "no pool"
        return (
            f"cnn {config['spatial_dims']}-D {config['widths']} k{config['kernel_size']} "
            f"{pooling} {config['norm']}-norm"
        )
    if task.host_kind == "gpt" and {"d_model", "n_heads", "n_layers", "block_size"} <= config.keys():
        return f"gpt d{config['d_model']} h{config['n_heads']} L{config['n_layers']} T{config['block_size']}"
    details = ", ".join(f"{key}={value}" for key, value in config.items())
    return f"{task.host_kind} ({details})"
