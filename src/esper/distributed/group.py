"""Process-group setup from torchrun's environment variables, and rank/world helpers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

# How long a collective waits for the other ranks before it fails. A rank that raises is torn
# down by torchrun's agent at once; this bounds the wait when a rank hangs or dies silently.
TIMEOUT_VARIABLE = "ESPER_DIST_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 120.0


class DistributedSetupError(RuntimeError):
    """The torchrun environment is incomplete or inconsistent."""


_local_depth = 0


def active() -> bool:
    """A process group with more than one rank is initialised, and this code is not in a `local_scope`."""
    return _local_depth == 0 and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextmanager
def local_scope() -> Iterator[None]:
    """Inside: this rank's own work, which takes part in no collective (e.g. the host-model training
    of a PPO environment: each rank's environments are independent runs)."""
    global _local_depth
    _local_depth += 1
    try:
        yield
    finally:
        _local_depth -= 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def _timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_VARIABLE)
    if raw is None:
        return timedelta(seconds=DEFAULT_TIMEOUT_SECONDS)
    try:
        seconds = float(raw)
    except ValueError:
        raise DistributedSetupError(f"{TIMEOUT_VARIABLE}={raw!r}: expected a number of seconds") from None
    if not seconds > 0:
        raise DistributedSetupError(f"{TIMEOUT_VARIABLE}={raw!r}: expected a positive number of seconds")
    return timedelta(seconds=seconds)


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun described (RANK, WORLD_SIZE, MASTER_ADDR, ...).

    Returns True when this process is one rank of several. Outside torchrun, or with
    WORLD_SIZE=1, nothing is initialised and False is returned. gloo on CPU, NCCL on CUDA
    (each rank on the GPU of its LOCAL_RANK).
    """
    if dist.is_initialized():
        return active()
    if not launched_by_torchrun():
        return False
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise DistributedSetupError(f"launched by torchrun but {name} is not set")
    world = int(os.environ["WORLD_SIZE"])
    if world <= 1:
        return False
    if not dist.is_available():
        raise DistributedSetupError("this torch build has no torch.distributed")
    backend = "gloo"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise DistributedSetupError("--device cuda under torchrun, but CUDA is not available")
        torch.cuda.set_device(local_rank())
        backend = "nccl"
    dist.init_process_group(backend=backend, init_method="env://", timeout=_timeout())
    return True


# Backends whose collectives move CPU tensors; NCCL moves only CUDA tensors.
_CPU_BACKENDS = frozenset({"gloo", "mpi"})


def collective_device_for(backend: str, cuda_index: Callable[[], int] = torch.cuda.current_device) -> torch.device:
    """Where the tensors of a collective must live for process-group `backend`.

    gloo (and mpi): the CPU. nccl: the rank's current CUDA device (`init_from_env` set it to
    LOCAL_RANK), read through `cuda_index`. A per-device backend string such as
    "cpu:gloo,cuda:nccl" serves CPU tensors, so the CPU is used (no copy to the GPU).
    """
    parts = [part.strip() for part in backend.lower().split(",") if part.strip()]
    if not parts:
        raise DistributedSetupError(f"process-group backend {backend!r}: expected a backend name such as gloo or nccl")
    if len(parts) > 1 or ":" in parts[0]:
        devices = {part.partition(":")[0] for part in parts}
        if "cpu" in devices:
            return torch.device("cpu")
        if devices == {"cuda"}:
            return torch.device("cuda", cuda_index())
        raise DistributedSetupError(f"process-group backend {backend!r}: serves neither CPU nor CUDA tensors")
    if parts[0] in _CPU_BACKENDS:
        return torch.device("cpu")
    if parts[0] == "nccl":
        return torch.device("cuda", cuda_index())
    raise DistributedSetupError(f"process-group backend {backend!r}: expected gloo, mpi or nccl")


def collective_device() -> torch.device:
    """The device of this process group's collective tensors (the CPU when there is no group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return torch.device("cpu")
    return collective_device_for(str(dist.get_backend()))


def device_for(device: str) -> str:
    """The device string this rank uses: cuda:LOCAL_RANK under a CUDA process group."""
    if device == "cuda" and active():
        return f"cuda:{local_rank()}"
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
