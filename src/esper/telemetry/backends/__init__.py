"""Telemetry backends and the name-based factory used by the CLI.

Optional dependencies (tensorboard, wandb) are imported only when such a
backend is constructed, so importing this package stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from esper.telemetry.backends.console import ConsoleBackend
from esper.telemetry.backends.jsonl import EVENTS_FILE_NAME, JsonlBackend
from esper.telemetry.backends.tensorboard import TensorBoardBackend
from esper.telemetry.backends.wandb import WandbBackend
from esper.telemetry.hub import Backend

BACKEND_NAMES: tuple[str, ...] = ("console", "jsonl", "tensorboard", "wandb")
TENSORBOARD_DIR_NAME = "tensorboard"
WANDB_PROJECT = "esper"


def _build_one(name: str, run_dir: Path) -> Backend:
    if name == "console":
        return ConsoleBackend()
    if name == "jsonl":
        return JsonlBackend(run_dir / EVENTS_FILE_NAME)
    if name == "tensorboard":
        return TensorBoardBackend(run_dir / TENSORBOARD_DIR_NAME)
    if name == "wandb":
        return WandbBackend(project=WANDB_PROJECT, run_dir=run_dir)
    raise ValueError(f"telemetry backend: unknown name {name!r}; valid names are {list(BACKEND_NAMES)}")


def build_backends(names: Sequence[str], run_dir: Path) -> list[Backend]:
    """Backends for `names` (in order) writing under `run_dir`.

    Unknown or repeated names raise ValueError before anything is built; if a
    backend fails to build (e.g. a missing extra), the ones built so far are
    closed before the error propagates.
    """
    for name in names:
        if name not in BACKEND_NAMES:
            raise ValueError(
                f"telemetry backend: unknown name {name!r}; valid names are {list(BACKEND_NAMES)}"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"telemetry backend: names given more than once: {repeated}")
    run_dir = Path(run_dir)
    built: list[Backend] = []
    try:
        for name in names:
            built.append(_build_one(name, run_dir))
    except BaseException:
        for backend in built:
            backend.close()
        raise
    return built


__all__ = [
    "BACKEND_NAMES",
    "EVENTS_FILE_NAME",
    "Backend",
    "ConsoleBackend",
    "JsonlBackend",
    "TensorBoardBackend",
    "WandbBackend",
    "build_backends",
]
