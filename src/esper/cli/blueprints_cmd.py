"""`esper blueprints`: every registered seed blueprint with its exact parameter count.

CNN blueprints are counted at both 1-D and 2-D feature maps (kernel sizes make
them differ); transformer blueprints at `--width` with `--heads` heads.
Blueprints that cannot be built at that width on this machine (for example a
LoRA rank above the width) are listed separately with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from esper.blueprints import BlueprintRegistry, default_registry
from esper.contracts.shapes import SlotShape

__all__ = ["collect", "handler", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "blueprints",
        help="list seed blueprints with exact parameter counts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--width", type=int, default=64, help="channels (cnn) / model width (transformer)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads for transformer shapes")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=handler)


def _argument_error(args: argparse.Namespace) -> str | None:
    if args.width <= 0:
        return f"--width: expected a positive int, got {args.width}"
    if args.heads <= 0:
        return f"--heads: expected a positive int, got {args.heads}"
    if args.width % args.heads:
        return f"--width: expected a multiple of --heads ({args.heads}), got {args.width}"
    return None


def collect(registry: BlueprintRegistry, width: int, heads: int) -> dict[str, Any]:
    """The JSON document: buildable blueprints per topology, plus the unavailable ones with reasons."""
    cnn_1d = SlotShape("cnn", width, spatial_dims=1)
    cnn_2d = SlotShape("cnn", width, spatial_dims=2)
    transformer = SlotShape("transformer", width, n_heads=heads)
    unavailable_cnn = {**registry.unavailable("cnn", cnn_1d), **registry.unavailable("cnn", cnn_2d)}
    params_1d = {info.name: info.params for info in registry.listing("cnn", cnn_1d)}
    cnn_rows = [
        {
            "name": info.name,
            "description": info.description,
            "params_1d": params_1d[info.name],
            "params_2d": info.params,
        }
        for info in registry.listing("cnn", cnn_2d)
        if info.name not in unavailable_cnn
    ]
    transformer_rows = [
        {"name": info.name, "description": info.description, "params": info.params}
        for info in registry.listing("transformer", transformer)
    ]
    unavailable_transformer = registry.unavailable("transformer", transformer)
    return {
        "width": width,
        "blueprints": {"cnn": cnn_rows, "transformer": transformer_rows},
        "unavailable": {
            "cnn": [{"name": name, "reason": why} for name, why in unavailable_cnn.items()],
            "transformer": [{"name": name, "reason": why} for name, why in unavailable_transformer.items()],
        },
    }


def _print_tables(document: dict[str, Any], heads: int) -> None:
    console = Console()
    width = document["width"]
    cnn = Table(title=f"cnn blueprints at {width} channels")
    for column in ("name", "params 1-D", "params 2-D", "description"):
        cnn.add_column(column, justify="right" if column.startswith("params") else "left")
    for row in document["blueprints"]["cnn"]:
        cnn.add_row(row["name"], f"{row['params_1d']:,}", f"{row['params_2d']:,}", row["description"])
    transformer = Table(title=f"transformer blueprints at width {width}, {heads} heads")
    for column in ("name", "params", "description"):
        transformer.add_column(column, justify="right" if column == "params" else "left")
    for row in document["blueprints"]["transformer"]:
        transformer.add_row(row["name"], f"{row['params']:,}", row["description"])
    console.print(cnn)
    console.print(transformer)
    for topology, rows in document["unavailable"].items():
        for row in rows:
            # Reasons are plain text; escape them so brackets in them are not read as markup.
            name, reason = escape(row["name"]), escape(row["reason"])
            console.print(f"[yellow]unavailable[/yellow] {topology}/{name}: {reason}")


def handler(args: argparse.Namespace) -> int:
    error = _argument_error(args)
    if error is not None:
        print(f"esper blueprints: {error}", file=sys.stderr)
        return 2
    document = collect(default_registry(), args.width, args.heads)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        _print_tables(document, args.heads)
    return 0
