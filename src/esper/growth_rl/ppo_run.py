"""The PPO run loop's distributed parts: each rank's share of the environments, its action
sampler, and the round's returns and episodes gathered for rank 0's report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist

from esper.distributed.group import active, rank, world_size


class _PPOSettings(Protocol):
    @property
    def n_minibatches(self) -> int: ...


class _EnvCount(Protocol):
    # Read-only, as the fields of a frozen config are.
    @property
    def envs(self) -> int: ...

    @property
    def ppo(self) -> _PPOSettings: ...


@dataclass(frozen=True)
class EnvShare:
    offset: int
    count: int


class DistributedPPOError(ValueError):
    """A PPO setting that cannot be split across the ranks."""


def env_share(config: _EnvCount) -> EnvShare:
    """This rank's environments: a contiguous block of envs / world (all of them on one process)."""
    world = world_size()
    if config.envs % world != 0:
        raise DistributedPPOError(
            f"envs: {config.envs} environments cannot be shared equally by {world} ranks "
            f"(use a multiple of {world})"
        )
    count = config.envs // world
    if config.ppo.n_minibatches > count:
        raise DistributedPPOError(
            f"ppo.n_minibatches: {config.ppo.n_minibatches} minibatches need at least as many environments "
            f"per rank, and each of the {world} ranks has {count}"
        )
    return EnvShare(offset=rank() * count, count=count)


def sampler_for_round(sampler: torch.Generator, seed: int, round_index: int) -> torch.Generator:
    """Rank 0 samples actions from the run's sampler (checkpointed, as on one process); every other
    rank from its own generator, seeded per round so a resumed run samples as the uninterrupted one."""
    if rank() == 0:
        return sampler
    return torch.Generator().manual_seed((seed * 1_000_003 + round_index) * 1_009 + rank())


def gather_round(returns: list[float], episodes: list[dict[str, Any]]) -> tuple[list[float], list[dict[str, Any]]]:
    """Every rank's finished-episode returns and infos, in rank order."""
    if not active():
        return returns, episodes
    boxes: list[Any] = [None] * world_size()
    dist.all_gather_object(boxes, (returns, episodes))
    all_returns = [r for box in boxes for r in box[0]]
    all_episodes = [e for box in boxes for e in box[1]]
    return all_returns, all_episodes


class EventRelay:
    """Rank 0 emits its environments' events at once; the other ranks keep theirs until `flush`,
    which gathers them to rank 0 (in rank order) and emits them there. One process: a pass-through."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self._emit = emit
        self._held: list[Any] = []

    def emit(self, event: Any) -> None:
        if active() and rank() != 0:
            self._held.append(event)
        else:
            self._emit(event)

    def flush(self) -> None:
        if not active():
            return
        boxes: list[Any] = [None] * world_size()
        dist.all_gather_object(boxes, self._held)
        self._held = []
        if rank() == 0:
            for held in boxes[1:]:
                for event in held:
                    self._emit(event)
