"""The PPO run loop's distributed parts: each rank's share of the environments, its action
sampler, and the round's statistics made global for rank 0's report (episode returns and
infos gathered; the update's losses, explained variance and the action mix reduced over the
ranks). On one process every function here returns its input unchanged."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor

from esper.distributed.collectives import all_reduce_sums, all_reduce_tensor_sum
from esper.distributed.group import active, rank, world_size

_RANK_LOCAL_UPDATE_METRICS = ("policy_loss", "value_loss", "entropy")


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


def global_means(metrics: dict[str, float], keys: Sequence[str] | None = None) -> dict[str, float]:
    """`metrics` with each of `keys` (all by default) averaged over the ranks, in one all-reduce.

    For per-sample means (losses, entropy, expert probability): every rank holds an equal share
    of the samples and takes the same number of minibatch steps, so the mean of the ranks'
    means is the mean over all samples.
    """
    if not active():
        return metrics
    chosen = list(metrics) if keys is None else list(keys)
    sums = all_reduce_sums([metrics[key] for key in chosen])
    return {**metrics, **{key: total / world_size() for key, total in zip(chosen, sums, strict=True)}}


def explained_variance_sums(predicted: Tensor, target: Tensor) -> float:
    """1 - Var(target - predicted) / Var(target) over every rank's samples (NaN when the
    target has no variance), from summed moments in float64. One process: `explained_variance`."""
    from esper.rl.ppo import explained_variance

    if not active():
        return explained_variance(predicted, target)
    t = target.detach().double().flatten()
    d = (target - predicted).detach().double().flatten()
    t_sum, t_sq, d_sum, d_sq, count = all_reduce_sums(
        [float(t.sum()), float((t * t).sum()), float(d.sum()), float((d * d).sum()), t.numel()]
    )
    target_var = t_sq / count - (t_sum / count) ** 2
    if target_var <= 0.0:
        return float("nan")
    return 1.0 - (d_sq / count - (d_sum / count) ** 2) / target_var


def global_update_metrics(metrics: dict[str, float], values: Tensor, returns: Tensor) -> dict[str, float]:
    """A PPO update's reported metrics over all ranks' rollouts (see `global_means`); the
    explained variance is recomputed from every rank's values and returns."""
    if not active():
        return metrics
    # approx_kl and clip_fraction are global already (the KL early stop reads them), and the
    # gradient norm is taken after the gradients were averaged: identical on every rank.
    merged = global_means(metrics, _RANK_LOCAL_UPDATE_METRICS)
    merged["explained_variance"] = explained_variance_sums(values, returns)
    return merged


def global_counts(counts: Tensor) -> Tensor:
    """Counts (e.g. of the actions taken) summed over the ranks."""
    return all_reduce_tensor_sum(counts)


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
