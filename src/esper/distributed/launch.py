"""Joining and leaving torchrun's process group around one CLI command."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from esper.distributed.group import DistributedSetupError, active, init_from_env, rank, shutdown


@contextmanager
def torchrun_rank(device: str, *, command: str) -> Iterator[None]:
    """Inside: this process is one rank of torchrun's job (or a plain process outside torchrun).

    A rank that raises leaves with its error on one stderr line naming its rank (exit status 1); torchrun's
    agent then stops the other ranks, so the job ends instead of waiting in a collective
    (a collective that still waits fails after ESPER_DIST_TIMEOUT seconds).
    """
    try:
        joined = init_from_env(device)
    except (DistributedSetupError, ValueError, RuntimeError) as error:
        raise SystemExit(_line(command, f"cannot join the torchrun process group: {error}")) from None
    try:
        yield
    except Exception as error:
        if not active():
            raise
        # One line, not a traceback per rank; torchrun reports which rank exited and stops the others.
        print(_line(command, f"rank {rank()} failed: {type(error).__name__}: {error}"), file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        if joined:
            # DDP wrappers left in reference cycles (a run and its listeners) must go before the
            # process group: destroyed after it, at interpreter exit, their reducer aborts the process.
            gc.collect()
            shutdown()


def _line(command: str, message: str) -> str:
    return f"{command}: {message}"
