"""Decentralised PPO: each rank holds its share of the environments; what the update reads is global.

`DecentralisedSync` is the `esper.rl.ppo.RankSync` a PPO trainer is given under torchrun (the
RL core itself knows nothing of process groups); imitation calls the functions directly.

- Normaliser statistics: the observations (and rewards) of every rank are gathered, in rank
  order, before a normaliser is updated, so every rank's normaliser equals the one a single
  process with all the environments would hold. A rollout step's rewards, dones and next
  observations travel in one all-gather (the next step folds those observations in).
- Advantage normalisation uses the global mean and standard deviation (summed moments); it
  shares one all-reduce with the minibatch's KL and clip fraction.
- Gradients are averaged over the ranks before clipping and the optimizer step, so every
  rank's policy stays identical. Each rank's minibatch is a mean over its own samples; ranks
  hold equal shares, so the average of the ranks' gradients is the gradient of the global mean.
- Early stopping on the KL reads the global mean KL, so every rank stops at the same step.

Every collective tensor lives on the process group's collective device (the CPU under gloo,
the rank's CUDA device under NCCL) and results come back on the inputs' devices.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from esper.distributed.collectives import all_reduce_sums
from esper.distributed.group import collective_device, rank, world_size
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd

# float64 holds every value of these dtypes exactly, so rows packed in it come back bit for bit.
_PACKABLE = frozenset({torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32,
                       torch.float16, torch.bfloat16, torch.float32, torch.float64})  # fmt: skip


def gather_row_sets(*local: Tensor) -> list[Tensor]:
    """For each tensor of `local` (all with the same number of rows, equal shapes on every rank):
    every rank's rows concatenated along dim 0 in rank order, dtype and device kept. One all-gather
    for all of them: the tensors travel side by side as float64 columns."""
    if not local:
        raise ValueError("gather_row_sets: expected at least one tensor")
    rows = local[0].shape[0]
    for index, tensor in enumerate(local):
        if tensor.dim() == 0 or tensor.shape[0] != rows:
            raise ValueError(
                f"gather_row_sets: tensor {index}: expected {rows} rows (as tensor 0), got shape {tuple(tensor.shape)}"
            )
        if tensor.dtype not in _PACKABLE:
            raise ValueError(f"gather_row_sets: tensor {index}: dtype {tensor.dtype} does not fit float64 exactly")
    device = collective_device()
    columns = [t.detach().reshape(rows, -1).to(device=device, dtype=torch.float64) for t in local]
    packed = torch.cat(columns, dim=1)
    parts = [torch.empty_like(packed) for _ in range(world_size())]
    dist.all_gather(parts, packed)
    whole = torch.cat(parts, dim=0)
    out: list[Tensor] = []
    offset = 0
    for tensor, column in zip(local, columns, strict=True):
        width = column.shape[1]
        piece = whole[:, offset : offset + width].reshape(-1, *tensor.shape[1:])
        out.append(piece.to(device=tensor.device, dtype=tensor.dtype))
        offset += width
    return out


def gather_rows(local: Tensor) -> Tensor:
    """Every rank's `local` (equal shapes), concatenated along dim 0 in rank order."""
    return gather_row_sets(local)[0]


def local_rows(global_rows: Tensor) -> Tensor:
    """This rank's slice of a tensor gathered with `gather_rows`."""
    share = global_rows.shape[0] // world_size()
    return global_rows[rank() * share : (rank() + 1) * share]


def _advantage_moments(advantages: Tensor) -> list[float]:
    flat = advantages.detach().double()
    return [float(flat.sum()), float((flat * flat).sum()), flat.numel()]


def _normalized(advantages: Tensor, total: float, squares: float, count: float) -> Tensor:
    mean = total / count
    std = max(squares / count - mean * mean, 0.0) ** 0.5
    return (advantages - mean) / (std + 1e-8)


def minibatch_statistics(
    approx_kl: float, clip_fraction: float, advantages: Tensor | None
) -> tuple[float, float, Tensor | None]:
    """The global mean KL and clip fraction and, when `advantages` is given, the advantages
    normalised with the global moments: one all-reduce for the three."""
    moments = [] if advantages is None else _advantage_moments(advantages)
    kl_sum, clip_sum, *global_moments = all_reduce_sums([approx_kl, clip_fraction, *moments])
    normalized = None if advantages is None else _normalized(advantages, *global_moments)
    return kl_sum / world_size(), clip_sum / world_size(), normalized


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Average the gradients over the ranks (one flat all-reduce).

    A parameter may have a gradient on one rank and none on another (a head that no action of
    that rank's minibatch used): missing gradients count as zeros, and a parameter keeps no
    gradient only where no rank produced one, so every rank's optimizer steps the same parameters.
    """
    params = list(parameters)
    device = collective_device()
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    flat = torch.cat(
        [present]
        + [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(device=device, dtype=torch.float32)
            for p in params
        ]
    )
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    produced = flat[: len(params)].tolist()  # one read of the presence counts, not one per parameter
    offset = len(params)
    for index, p in enumerate(params):
        chunk = flat[offset : offset + p.numel()]
        offset += p.numel()
        if produced[index] == 0:
            p.grad = None
            continue
        averaged = (chunk / world_size()).view_as(p).to(device=p.device, dtype=p.dtype)
        if p.grad is None:
            p.grad = averaged.clone()
        else:
            p.grad.copy_(averaged)


def update_obs_normalizer(normalizer: RunningMeanStd, raw: Tensor) -> None:
    """Fold every rank's observations (rank order = env order) into `normalizer`."""
    normalizer.update(gather_rows(raw))


def fold_step(
    normalizer: RewardNormalizer | None, reward: Tensor, done: Tensor, next_raw: Tensor
) -> tuple[Tensor, Tensor]:
    """One environment step's exchange, in one all-gather: folds every rank's rewards and dones
    into `normalizer` (when there is one) and returns this rank's normalised rewards (the raw
    ones without a normaliser) and every rank's next raw observations, in rank order."""
    all_rewards, all_dones, all_next = gather_row_sets(reward, done, next_raw)
    if normalizer is None:
        return reward, all_next
    normalizer.update(all_rewards, all_dones)
    return local_rows(normalizer.normalize(all_rewards)), all_next


class DecentralisedSync:
    """The RankSync of a trainer whose ranks each hold a share of the environments."""

    def fold_observations(self, normalizer: RunningMeanStd, raw: Tensor) -> None:
        update_obs_normalizer(normalizer, raw)

    def fold_step(
        self, normalizer: RewardNormalizer | None, reward: Tensor, done: Tensor, next_raw: Tensor
    ) -> tuple[Tensor, Tensor]:
        return fold_step(normalizer, reward, done, next_raw)

    def minibatch_statistics(
        self, approx_kl: float, clip_fraction: float, advantages: Tensor | None
    ) -> tuple[float, float, Tensor | None]:
        return minibatch_statistics(approx_kl, clip_fraction, advantages)

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        average_gradients(parameters)
