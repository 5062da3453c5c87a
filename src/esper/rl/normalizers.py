"""Observation and reward normalisers, with strict, weights_only-safe state dicts.

Their state is part of the agent: a resumed run that rebuilt them from scratch
would feed the policy differently-scaled inputs (a reference bug), so both
save and load every statistic they use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor


def check_state_keys(state: Mapping[str, object], expected: Iterable[str], owner: str) -> None:
    """Raise ValueError naming missing and unknown keys of a state dict."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{owner}.load_state_dict: expected a dict, got {type(state).__name__}")
    wanted = set(expected)
    missing = sorted(wanted - set(state))
    unknown = sorted(set(state) - wanted)
    if missing or unknown:
        raise ValueError(f"{owner}.load_state_dict: missing keys {missing}, unknown keys {unknown}")


def _tensor_field(state: Mapping[str, object], key: str, shape: tuple[int, ...], owner: str) -> Tensor:
    value = state[key]
    if not isinstance(value, Tensor):
        raise ValueError(f"{owner}.load_state_dict: '{key}' expected a tensor, got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise ValueError(f"{owner}.load_state_dict: '{key}' expected shape {shape}, got {tuple(value.shape)}")
    return value.to(torch.float64).clone()


def _number_field(state: Mapping[str, object], key: str, kind: type, owner: str) -> float | int:
    value = state[key]
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if isinstance(value, bool) or not ok:
        raise ValueError(f"{owner}.load_state_dict: '{key}' expected {kind.__name__}, got {value!r}")
    return kind(value)


class RunningMeanStd:
    """Per-feature running mean/variance as an exponential moving average.

    The first update sets the statistics; later ones mix in each batch with
    weight (1 - momentum), counting the shift of the mean as variance.
    `normalize` returns (x - mean) / sqrt(var + epsilon) clipped to +-clip.
    With `frozen` set (evaluation), `update` leaves the statistics unchanged.
    """

    _KEYS = ("shape", "mean", "var", "count", "momentum", "clip", "epsilon")

    def __init__(
        self,
        shape: int | tuple[int, ...],
        momentum: float = 0.99,
        clip: float = 10.0,
        epsilon: float = 1e-8,
        frozen: bool = False,
    ) -> None:
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"RunningMeanStd.momentum: expected 0 <= momentum < 1, got {momentum}")
        if clip <= 0 or epsilon <= 0:
            raise ValueError(
                f"RunningMeanStd: clip and epsilon must be > 0, got clip={clip}, epsilon={epsilon}"
            )
        self.momentum = float(momentum)
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.frozen = frozen
        # float64 so that long runs of small EMA updates do not drift.
        self.mean = torch.zeros(self.shape, dtype=torch.float64)
        self.var = torch.ones(self.shape, dtype=torch.float64)
        self.count = 0  # number of updates applied

    def _check_batch(self, x: Tensor, what: str) -> None:
        if tuple(x.shape[-len(self.shape) :]) != self.shape or x.dim() < len(self.shape):
            raise ValueError(
                f"RunningMeanStd.{what}: expected trailing shape {self.shape}, got {tuple(x.shape)}"
            )

    @torch.no_grad()
    def update(self, batch: Tensor) -> None:
        """batch (N, *shape): fold its mean/variance into the running statistics."""
        if self.frozen:
            return
        self._check_batch(batch, "update")
        flat = batch.detach().to(torch.float64).reshape(-1, *self.shape)
        if flat.shape[0] == 0:
            raise ValueError("RunningMeanStd.update: got an empty batch")
        batch_mean = flat.mean(dim=0)
        batch_var = flat.var(dim=0, unbiased=False)
        if self.count == 0:
            self.mean, self.var = batch_mean, batch_var
        else:
            m = self.momentum
            shift = batch_mean - self.mean
            self.var = m * self.var + (1 - m) * batch_var + m * (1 - m) * shift * shift
            self.mean = m * self.mean + (1 - m) * batch_mean
        self.count += 1

    @torch.no_grad()
    def normalize(self, x: Tensor) -> Tensor:
        """Normalise `x` (*, *shape) with the current statistics; keeps x's dtype."""
        self._check_batch(x, "normalize")
        std = torch.sqrt(self.var + self.epsilon)
        out = ((x.to(torch.float64) - self.mean) / std).clamp(-self.clip, self.clip)
        return out.to(x.dtype)

    def state_dict(self) -> dict[str, object]:
        return {
            "shape": list(self.shape),
            "mean": self.mean.clone(),
            "var": self.var.clone(),
            "count": self.count,
            "momentum": self.momentum,
            "clip": self.clip,
            "epsilon": self.epsilon,
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        owner = "RunningMeanStd"
        check_state_keys(state, self._KEYS, owner)
        shape = state["shape"]
        if not isinstance(shape, list | tuple) or tuple(shape) != self.shape:
            raise ValueError(f"{owner}.load_state_dict: 'shape' expected {list(self.shape)}, got {shape!r}")
        mean = _tensor_field(state, "mean", self.shape, owner)
        var = _tensor_field(state, "var", self.shape, owner)
        count = _number_field(state, "count", int, owner)
        momentum = _number_field(state, "momentum", float, owner)
        clip = _number_field(state, "clip", float, owner)
        epsilon = _number_field(state, "epsilon", float, owner)
        self.mean, self.var, self.count = mean, var, int(count)
        self.momentum, self.clip, self.epsilon = float(momentum), float(clip), float(epsilon)


class RewardNormalizer:
    """Divides rewards by the running std of each env's discounted return.

    Keeps one discounted return per env (reset after a done) and an exact
    running mean/variance over all returns seen; rewards are not centred,
    only scaled, and then clipped to +-clip.
    """

    _KEYS = ("n_envs", "gamma", "clip", "epsilon", "returns", "mean", "var", "count")

    def __init__(
        self, n_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8, frozen: bool = False
    ) -> None:
        if n_envs < 1:
            raise ValueError(f"RewardNormalizer.n_envs: expected >= 1, got {n_envs}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"RewardNormalizer.gamma: expected 0 <= gamma <= 1, got {gamma}")
        if clip <= 0 or epsilon <= 0:
            raise ValueError(
                f"RewardNormalizer: clip and epsilon must be > 0, got clip={clip}, epsilon={epsilon}"
            )
        self.n_envs = n_envs
        self.gamma = float(gamma)
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.frozen = frozen
        self.returns = torch.zeros(n_envs, dtype=torch.float64)
        self.mean = torch.zeros((), dtype=torch.float64)
        self.var = torch.ones((), dtype=torch.float64)
        self.count = 0  # number of return samples seen

    def _check(self, x: Tensor, name: str) -> None:
        if tuple(x.shape) != (self.n_envs,):
            raise ValueError(
                f"RewardNormalizer: '{name}' expected shape ({self.n_envs},), got {tuple(x.shape)}"
            )

    @torch.no_grad()
    def update(self, rewards: Tensor, dones: Tensor) -> None:
        """Advance each env's discounted return by this step's reward; fold them into the stats."""
        if self.frozen:
            return
        self._check(rewards, "rewards")
        self._check(dones, "dones")
        if dones.dtype != torch.bool:
            raise ValueError(f"RewardNormalizer: 'dones' expected dtype torch.bool, got {dones.dtype}")
        self.returns = self.returns * self.gamma + rewards.detach().to(torch.float64)
        # Parallel (Chan et al.) combination: exact running moments, not an EMA.
        n = self.n_envs
        batch_mean = self.returns.mean()
        batch_var = self.returns.var(unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta * delta * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.var = m2 / total
        self.count = total
        self.returns = torch.where(dones, torch.zeros_like(self.returns), self.returns)

    @torch.no_grad()
    def normalize(self, rewards: Tensor) -> Tensor:
        self._check(rewards, "rewards")
        std = torch.sqrt(self.var + self.epsilon)
        return (rewards.to(torch.float64) / std).clamp(-self.clip, self.clip).to(rewards.dtype)

    def state_dict(self) -> dict[str, object]:
        return {
            "n_envs": self.n_envs,
            "gamma": self.gamma,
            "clip": self.clip,
            "epsilon": self.epsilon,
            "returns": self.returns.clone(),
            "mean": self.mean.clone(),
            "var": self.var.clone(),
            "count": self.count,
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        owner = "RewardNormalizer"
        check_state_keys(state, self._KEYS, owner)
        n_envs = _number_field(state, "n_envs", int, owner)
        if n_envs != self.n_envs:
            raise ValueError(f"{owner}.load_state_dict: 'n_envs' expected {self.n_envs}, got {n_envs}")
        returns = _tensor_field(state, "returns", (self.n_envs,), owner)
        mean = _tensor_field(state, "mean", (), owner)
        var = _tensor_field(state, "var", (), owner)
        gamma = _number_field(state, "gamma", float, owner)
        clip = _number_field(state, "clip", float, owner)
        epsilon = _number_field(state, "epsilon", float, owner)
        count = _number_field(state, "count", int, owner)
        self.returns, self.mean, self.var, self.count = returns, mean, var, int(count)
        self.gamma, self.clip, self.epsilon = float(gamma), float(clip), float(epsilon)
