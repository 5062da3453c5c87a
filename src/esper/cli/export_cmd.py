"""`esper export CHECKPOINT --out FILE.safetensors`: a grown model as a static module's weights.

Reads a model checkpoint (or the model inside a run checkpoint), bakes every
fossilized seed into a plain static module and writes its weights with
safetensors plus the metadata `esper.checkpoints.export.load_exported`
needs to rebuild it. Seeds that are not fossilized are left out, with a
warning naming each. An existing --out file is replaced only with
--overwrite, and never when it is the checkpoint itself. Exit 0 on success,
2 on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from esper.checkpoints.errors import CheckpointError
from esper.checkpoints.export import export_safetensors
from esper.checkpoints.model_io import load_model

__all__ = ["handler", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model or run checkpoint as a static safetensors module",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="model (.pt) or run checkpoint")
    parser.add_argument("--out", required=True, metavar="FILE", help="output file, e.g. grown.safetensors")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(func=handler)


def _fail(message: str) -> int:
    print(f"esper export: {message}", file=sys.stderr)
    return 2


def handler(args: argparse.Namespace) -> int:
    source = Path(args.checkpoint)
    out = Path(args.out)
    if not source.is_file():
        return _fail(f"CHECKPOINT {source}: no such file")
    if not out.parent.is_dir():
        return _fail(f"--out {out}: directory {out.parent} does not exist")
    if out.is_dir():
        return _fail(f"--out {out}: is a directory, expected a file path")
    if out.exists():
        # samefile: a symlink, a hard link or another spelling of the input is still the input.
        if os.path.samefile(source, out):
            return _fail(f"--out {out}: is the checkpoint being exported; choose another file")
        if not args.overwrite:
            return _fail(f"--out {out}: already exists; pass --overwrite to replace it")
    try:
        model = load_model(source)
    except CheckpointError as error:
        return _fail(str(error))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            static = export_safetensors(model, out)
        except OSError as error:
            return _fail(f"--out {out}: cannot write: {error}")
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    params = sum(p.numel() for p in {id(p): p for p in static.parameters()}.values())
    print(f"exported {source} -> {out}")
    print(f"  host: {model.host.kind} {model.host.config()}")
    if not static.blends:
        print("  seeds: none fossilized (the export is the bare host)")
    for slot_id, blend in static.fixed_blends().items():
        print(f"  seed {slot_id}: {blend.blueprint} ({blend.algorithm.name}, alpha {blend.alpha})")
    print(f"  parameters: {params}")
    return 0
