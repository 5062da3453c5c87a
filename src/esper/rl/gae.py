"""Generalised advantage estimation over a (time, env) rollout."""

from __future__ import annotations

import torch
from torch import Tensor


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    last_value: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Advantages and returns (both (T, N)).

    rewards, values, dones: (T, N); `dones[t]` means the episode ended after
    step t, so step t does not bootstrap from step t + 1. last_value (N,) is the
    value of the observation after the last step (ignored where dones[-1]).
    returns = advantages + values (the value-function target).
    """
    if rewards.dim() != 2:
        raise ValueError(f"compute_gae: rewards expected shape (T, N), got {tuple(rewards.shape)}")
    for name, tensor in (("values", values), ("dones", dones)):
        if tensor.shape != rewards.shape:
            raise ValueError(
                f"compute_gae: {name} shape {tuple(tensor.shape)} != rewards shape {tuple(rewards.shape)}"
            )
    if tuple(last_value.shape) != (rewards.shape[1],):
        raise ValueError(
            f"compute_gae: last_value expected shape ({rewards.shape[1]},), got {tuple(last_value.shape)}"
        )
    if not 0.0 <= gamma <= 1.0 or not 0.0 <= lam <= 1.0:
        raise ValueError(f"compute_gae: gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")

    n_steps = rewards.shape[0]
    not_done = 1.0 - dones.to(values.dtype)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(last_value, dtype=values.dtype)
    for t in reversed(range(n_steps)):
        next_value = last_value.to(values.dtype) if t == n_steps - 1 else values[t + 1]
        delta = rewards[t] + gamma * next_value * not_done[t] - values[t]
        running = delta + gamma * lam * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values
