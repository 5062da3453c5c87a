"""Decentralised PPO: each rank holds its share of the environments; what the update reads is global.

`DecentralisedSync` is the `esper.rl.ppo.RankSync` a PPO trainer is given under torchrun (the
RL core itself knows nothing of process groups); imitation calls the functions directly.

- Normaliser statistics: the observations (and rewards) of every rank are gathered, in rank
  order, before a normaliser is updated, so every rank's normaliser equals the one a single
  process with all the environments would hold.
- Advantage normalisation uses the global mean and standard deviation (summed moments).
- Gradients are averaged over the ranks before clipping and the optimizer step, so every
  rank's policy stays identical. Each rank's minibatch is a mean over its own samples; ranks
  hold equal shares, so the average of the ranks' gradients is the gradient of the global mean.
- Early stopping on the KL reads the global mean KL, so every rank stops at the same step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from esper.distributed.collectives import all_reduce_sums
from esper.distributed.group import rank, world_size
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd


def gather_rows(local: Tensor) -> Tensor:
    """Every rank's `local` (equal shapes), concatenated along dim 0 in rank order."""
    parts = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts, dim=0)


def local_rows(global_rows: Tensor) -> Tensor:
    """This rank's slice of a tensor gathered with `gather_rows`."""
    share = global_rows.shape[0] // world_size()
    return global_rows[rank() * share : (rank() + 1) * share]


def normalize_advantages(advantages: Tensor) -> Tensor:
    flat = advantages.detach().double()
    total, squares, count = all_reduce_sums([float(flat.sum()), float((flat * flat).sum()), flat.numel()])
    mean = total / count
    std = max(squares / count - mean * mean, 0.0) ** 0.5
    return (advantages - mean) / (std + 1e-8)


def global_mean(value: float) -> float:
    return all_reduce_sums([value])[0] / world_size()


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Average the gradients over the ranks (one flat all-reduce).

    A parameter may have a gradient on one rank and none on another (a head that no action of
    that rank's minibatch used): missing gradients count as zeros, and a parameter keeps no
    gradient only where no rank produced one, so every rank's optimizer steps the same parameters.
    """
    params = list(parameters)
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    flat = torch.cat(
        [present] + [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
    )
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = len(params)
    for index, p in enumerate(params):
        chunk = flat[offset : offset + p.numel()]
        offset += p.numel()
        if flat[index] == 0:
            p.grad = None
            continue
        averaged = (chunk / world_size()).view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = averaged.clone()
        else:
            p.grad.copy_(averaged)


def update_obs_normalizer(normalizer: RunningMeanStd, raw: Tensor) -> None:
    """Fold every rank's observations (rank order = env order) into `normalizer`."""
    normalizer.update(gather_rows(raw))


def update_reward_normalizer(normalizer: RewardNormalizer, reward: Tensor, done: Tensor) -> Tensor:
    """Advance the normaliser, which holds every env's return, with all ranks' rewards; returns this
    rank's normalised rewards."""
    all_rewards = gather_rows(reward)
    normalizer.update(all_rewards, gather_rows(done))
    return local_rows(normalizer.normalize(all_rewards))


class DecentralisedSync:
    """The RankSync of a trainer whose ranks each hold a share of the environments."""

    def fold_observations(self, normalizer: RunningMeanStd, raw: Tensor) -> None:
        update_obs_normalizer(normalizer, raw)

    def fold_rewards(self, normalizer: RewardNormalizer, reward: Tensor, done: Tensor) -> Tensor:
        return update_reward_normalizer(normalizer, reward, done)

    def global_mean(self, value: float) -> float:
        return global_mean(value)

    def normalize_advantages(self, advantages: Tensor) -> Tensor:
        return normalize_advantages(advantages)

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        average_gradients(parameters)
