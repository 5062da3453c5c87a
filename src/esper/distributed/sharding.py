"""Each rank's share of the data, with DistributedSampler semantics.

Training: the epoch's order is the single-process order (a permutation that depends
only on seed and epoch) cut to the same number of examples; rank r takes every
world-th example from r on, and splits its share into batches of batch_size / world.
So N ranks do the same total work as one process — the same optimizer steps over the
same examples per epoch — and the order is reshuffled every epoch.

Evaluation: rank r takes every world-th example from r on; sums are all-reduced.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from esper.distributed.group import active, rank, world_size


def _share() -> tuple[int, int]:
    """(this rank, the ranks) that split the data; (0, 1) outside a process group and inside a
    `local_scope`, where a rank's own runs (a PPO environment's host model) take all of it, as they
    would on one process."""
    return (rank(), world_size()) if active() else (0, 1)


class ShardingError(ValueError):
    """The batch cannot be split evenly across the ranks."""


def per_rank_batch_size(batch_size: int, world: int) -> int:
    if batch_size % world != 0:
        raise ShardingError(
            f"batch_size {batch_size} must be divisible by the number of ranks ({world}): each rank "
            f"trains on an equal share of every global batch"
        )
    return batch_size // world


def sharded_epoch_batches(
    dataset: TensorDataset,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    max_batches: int | None,
    device: torch.device,
) -> Iterator[tuple[Tensor, Tensor]]:
    """This rank's batches of epoch `epoch` (global batch `batch_size`)."""
    me, world = _share()
    local = per_rank_batch_size(batch_size, world)
    x, y = dataset.tensors
    # The same generator as the single-process order, so the global order does not depend on world.
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(dataset), generator=generator)
    steps = -(-len(order) // batch_size)
    if max_batches is not None:
        steps = min(steps, max_batches)
    order = order[: steps * batch_size]
    # Pad by wrapping around (as DistributedSampler does) so every rank takes the same number of steps.
    padded = steps * batch_size
    if len(order) < padded:
        order = torch.cat([order, order[: padded - len(order)]])
    mine = order[me::world]
    for step in range(steps):
        index = mine[step * local : (step + 1) * local]
        yield x[index].to(device), y[index].to(device)


def evaluation_shard(dataset: TensorDataset) -> TensorDataset:
    """Every world-th example from this rank on (all of it on one process)."""
    me, world = _share()
    if world == 1:
        return dataset
    x, y = dataset.tensors
    return TensorDataset(x[me::world], y[me::world])
