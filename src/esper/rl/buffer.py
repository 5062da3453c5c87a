"""Rollout storage for recurrent PPO.

The buffer stores, for each step, exactly the normalised observation the
policy acted on. The observation normaliser keeps updating during a rollout,
so re-normalising raw observations later would give the update different
inputs than the ones the actions were sampled from: the log-prob ratio would
start away from 1 and the KL/clip statistics would be wrong from the first
minibatch (storing raw observations would train the policy on inputs it never acted on).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from esper.contracts.actions import HEADS, ActionSpace
from esper.rl.distributions import ActionMasks
from esper.rl.gae import compute_gae
from esper.rl.policy import LSTMState


@dataclass(frozen=True)
class Minibatch:
    """Whole env sequences (B envs, T steps), so the LSTM can replay them from their start state."""

    env_indices: Tensor  # (B,)
    obs: Tensor  # (B, T, D) normalised, as acted on
    actions: Tensor  # (B, T, 8)
    log_probs: Tensor  # (B, T) at acting time
    values: Tensor  # (B, T) at acting time
    advantages: Tensor  # (B, T)
    returns: Tensor  # (B, T)
    dones: Tensor  # (B, T) bool
    masks: ActionMasks  # leading (B, T)
    initial_state: LSTMState  # (1, B, H) each


class RolloutBuffer:
    def __init__(self, n_envs: int, n_steps: int, obs_dim: int, action_space: ActionSpace) -> None:
        for name, value in (("n_envs", n_envs), ("n_steps", n_steps), ("obs_dim", obs_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RolloutBuffer.{name}: expected an int >= 1, got {value!r}")
        self.n_envs = n_envs
        self.n_steps = n_steps
        self.obs_dim = obs_dim
        self.action_space = action_space
        shape = (n_steps, n_envs)
        self.obs = torch.zeros(*shape, obs_dim)
        self.actions = torch.zeros(*shape, len(HEADS), dtype=torch.long)
        self.log_probs = torch.zeros(shape)
        self.values = torch.zeros(shape)
        self.rewards_raw = torch.zeros(shape)
        self.rewards = torch.zeros(shape)  # normalised; what GAE uses
        self.dones = torch.zeros(shape, dtype=torch.bool)
        self.advantages = torch.zeros(shape)
        self.returns = torch.zeros(shape)
        self._masks: list[ActionMasks] = []
        self.masks: ActionMasks | None = None  # (T, N, ...) once finished
        self.initial_state: LSTMState | None = None
        self.step = 0
        self.finished = False

    def start(self, initial_state: LSTMState) -> None:
        """Begin a rollout: record each env's LSTM state before its first step."""
        h, c = initial_state
        if h.shape[1] != self.n_envs or c.shape != h.shape:
            raise ValueError(
                f"RolloutBuffer.start: expected (h, c) of shape (1, {self.n_envs}, H), got "
                f"{tuple(h.shape)} and {tuple(c.shape)}"
            )
        self.initial_state = (h.detach().clone(), c.detach().clone())
        self._masks = []
        self.masks = None
        self.step = 0
        self.finished = False

    def _check(self, name: str, tensor: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        if tuple(tensor.shape) != shape:
            raise ValueError(f"RolloutBuffer.add: '{name}' expected shape {shape}, got {tuple(tensor.shape)}")
        if tensor.dtype != dtype:
            raise ValueError(f"RolloutBuffer.add: '{name}' expected dtype {dtype}, got {tensor.dtype}")

    @torch.no_grad()
    def add(
        self,
        obs: Tensor,
        actions: Tensor,
        log_prob: Tensor,
        value: Tensor,
        reward_raw: Tensor,
        reward: Tensor,
        done: Tensor,
        masks: ActionMasks,
    ) -> None:
        """Store one step for all envs. `obs` is the normalised observation given to `act`;
        `reward` the normalised reward (pass the raw one twice when not normalising)."""
        if self.initial_state is None:
            raise ValueError("RolloutBuffer.add: call start(initial_state) before adding steps")
        if self.step >= self.n_steps:
            raise ValueError(f"RolloutBuffer.add: buffer is full ({self.n_steps} steps)")
        n = self.n_envs
        self._check("obs", obs, (n, self.obs_dim), self.obs.dtype)
        self._check("actions", actions, (n, len(HEADS)), torch.long)
        for name, tensor in (("log_prob", log_prob), ("value", value), ("reward_raw", reward_raw)):
            self._check(name, tensor, (n,), torch.float32)
        self._check("reward", reward, (n,), torch.float32)
        self._check("done", done, (n,), torch.bool)
        if tuple(masks.batch_shape) != (n,):
            raise ValueError(
                f"RolloutBuffer.add: masks expected batch ({n},), got {tuple(masks.batch_shape)}"
            )
        t = self.step
        self.obs[t] = obs
        self.actions[t] = actions
        self.log_probs[t] = log_prob
        self.values[t] = value
        self.rewards_raw[t] = reward_raw
        self.rewards[t] = reward
        self.dones[t] = done
        self._masks.append(masks.apply(lambda x: x.detach().clone()))
        self.step += 1

    @torch.no_grad()
    def finish(self, last_value: Tensor, gamma: float, lam: float) -> None:
        """Compute advantages/returns from the normalised rewards; the buffer is then ready to sample."""
        if self.step != self.n_steps:
            raise ValueError(f"RolloutBuffer.finish: expected {self.n_steps} steps, got {self.step}")
        self.advantages, self.returns = compute_gae(
            self.rewards, self.values, self.dones, last_value.detach().to(self.values.dtype), gamma, lam
        )
        self.masks = ActionMasks.stack(self._masks, dim=0)
        self.finished = True

    def minibatches(
        self, n_minibatches: int, generator: torch.Generator | None = None
    ) -> Iterator[Minibatch]:
        """Split the envs at random into `n_minibatches` groups and yield each group's full sequences."""
        if not self.finished or self.masks is None or self.initial_state is None:
            raise ValueError("RolloutBuffer.minibatches: call finish() first")
        if not 1 <= n_minibatches <= self.n_envs:
            raise ValueError(
                f"RolloutBuffer.minibatches: n_minibatches must be in [1, n_envs={self.n_envs}], "
                f"got {n_minibatches}"
            )
        order = torch.randperm(self.n_envs, generator=generator)
        env_major = self.masks.apply(lambda t: t.transpose(0, 1))
        h0, c0 = self.initial_state
        for env_ids in torch.tensor_split(order, n_minibatches):
            yield Minibatch(
                env_indices=env_ids,
                obs=self.obs[:, env_ids].transpose(0, 1),
                actions=self.actions[:, env_ids].transpose(0, 1),
                log_probs=self.log_probs[:, env_ids].transpose(0, 1),
                values=self.values[:, env_ids].transpose(0, 1),
                advantages=self.advantages[:, env_ids].transpose(0, 1),
                returns=self.returns[:, env_ids].transpose(0, 1),
                dones=self.dones[:, env_ids].transpose(0, 1),
                masks=env_major.index(env_ids),
                initial_state=(h0[:, env_ids], c0[:, env_ids]),
            )
