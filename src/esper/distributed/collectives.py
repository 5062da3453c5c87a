"""Collectives for decisions: sums all-reduced in float64, objects broadcast from rank 0."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

from esper.distributed.group import active, collective_device, is_main

T = TypeVar("T")


def all_reduce_sums(values: Sequence[float]) -> list[float]:
    """Element-wise sums over all ranks (float64). Means are built from summed numerators
    and summed counts by the caller, never averaged across ranks."""
    if not active():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.cpu()]


def all_reduce_tensor_sum(tensor: torch.Tensor) -> torch.Tensor:
    """A summed copy of `tensor` (float64) over all ranks."""
    if not active():
        return tensor
    work = tensor.detach().to(device=collective_device(), dtype=torch.float64).clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)


def broadcast_object(value: T) -> T:
    """Rank 0's `value` on every rank (any picklable object)."""
    if not active():
        return value
    box: list[T] = [value]
    dist.broadcast_object_list(box, src=0, device=collective_device())
    return box[0]


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def on_main(work: Callable[[], T]) -> T:
    """Run `work` on rank 0 only and give its result to every rank.

    An exception raised by `work` is raised on every rank (so a bad input is refused by
    the whole job with rank 0's message, and no rank waits for a collective that never comes).
    """
    if not active():
        return work()
    outcome: object = None
    if is_main():
        try:
            outcome = work()
        except Exception as error:  # re-raised below on every rank, rank 0 included
            outcome = _Failed(error)
    outcome = broadcast_object(outcome)
    if isinstance(outcome, _Failed):
        raise outcome.error
    return outcome  # type: ignore[return-value]  # rank 0 ran work(): a T, or it raised above
