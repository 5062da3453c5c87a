"""The DistributedDataParallel wrapper of a growing model, rebuilt when its structure changes.

A germination, prune or fossilization (or a prune's freeze) changes which parameters
exist or train. DDP registers its gradient hooks for a fixed set of parameters, so
the wrapper is rebuilt whenever that set changes. Every rank changes structure at the
same moment (decisions and gate verdicts are broadcast), so every rank rebuilds at the
same moment too. Building DDP broadcasts rank 0's parameters and buffers: a new seed
starts identical on every rank.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from esper.distributed.group import active, collective_device


def _signature(model: nn.Module) -> tuple[tuple[str, int, bool], ...]:
    return tuple((name, id(p), p.requires_grad) for name, p in model.named_parameters())


class TrainingModule:
    """The module to run training forwards through: the model itself on one process,
    a DistributedDataParallel wrapper of it (built lazily, rebuilt on change) on several."""

    def __init__(self, model: nn.Module, has_idle_parameters: Callable[[], bool]) -> None:
        """`has_idle_parameters`: whether some trainable parameter takes no part in the forward now
        (a planted seed not yet in the forward); DDP then looks for unused parameters each step."""
        self.model = model
        self._has_idle_parameters = has_idle_parameters
        self._wrapper: DistributedDataParallel | None = None
        self._signature: tuple[tuple[str, int, bool], ...] | None = None
        self.rebuilds = 0

    def current(self) -> nn.Module:
        if not active():
            return self.model
        signature = (*_signature(self.model), ("idle", 0, self._has_idle_parameters()))
        if self._wrapper is None or signature != self._signature:
            # broadcast_buffers=False: DDP would otherwise broadcast rank 0's buffers before every
            # training forward (one more collective per step). Training forwards never read the
            # running statistics, and rank 0's own buffers evolve the same either way, so sending
            # them once, now and after each pass (`broadcast_buffers`), gives the same model.
            self._wrapper = DistributedDataParallel(
                self.model,
                find_unused_parameters=signature[-1][2],
                broadcast_buffers=False,
            )
            broadcast_buffers(self.model)
            self._signature = signature
            self.rebuilds += 1
        return self._wrapper


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics, ...) on every rank.

    DDP sends rank 0's buffers at the start of each forward, but the last forward of a pass
    updates each rank's running statistics from its own shard: without this, evaluation and
    the checkpoint would see rank-dependent buffers.
    """
    if not active():
        return
    device = collective_device()
    with torch.no_grad():
        for buffer in model.buffers():
            if buffer.device == device:
                dist.broadcast(buffer, src=0)
                continue
            # A buffer off the backend's device travels through a copy on it.
            work = buffer.to(device)
            dist.broadcast(work, src=0)
            buffer.copy_(work)
