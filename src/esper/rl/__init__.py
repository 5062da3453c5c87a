"""Reinforcement learning for the controller: masked factored policy, normalisers, GAE, rollouts, PPO.

Independent of Esper's model: anything that offers the VectorEnv protocol and
ActionMasks can be learned with it.

`esper.rl.GrowthEnv(task=..., episode_length=..., seed=...)` is the gymnasium
environment (`esper.rl.gym_env.GymGrowthEnv`, optional extra `gym`), loaded on
first use so importing esper.rl never needs gymnasium. Our own PPO drives the
environment it wraps, `esper.rl.environment.GrowthEnv`.
"""

from importlib import import_module
from typing import Any

from esper.rl.buffer import Minibatch, RolloutBuffer
from esper.rl.distributions import ActionMasks, MaskedCategorical, credit_matrix, effective_mask
from esper.rl.gae import compute_gae
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd, check_state_keys
from esper.rl.policy import ActResult, EvaluateResult, LSTMState, RecurrentActorCritic
from esper.rl.ppo import PPOConfig, PPOTrainer, RolloutCarry, VectorEnv, explained_variance

_GYM_NAMES = {"GrowthEnv": "GymGrowthEnv", "GymGrowthEnv": "GymGrowthEnv"}


def __getattr__(name: str) -> Any:
    if name in _GYM_NAMES:
        return getattr(import_module("esper.rl.gym_env"), _GYM_NAMES[name])
    raise AttributeError(f"module 'esper.rl' has no attribute {name!r}")


__all__ = [  # noqa: RUF022 (grouped: the gymnasium names come last)
    "ActResult",
    "ActionMasks",
    "EvaluateResult",
    "LSTMState",
    "MaskedCategorical",
    "Minibatch",
    "PPOConfig",
    "PPOTrainer",
    "RecurrentActorCritic",
    "RewardNormalizer",
    "RolloutBuffer",
    "RolloutCarry",
    "RunningMeanStd",
    "VectorEnv",
    "check_state_keys",
    "compute_gae",
    "credit_matrix",
    "effective_mask",
    "explained_variance",
    "GrowthEnv",
    "GymGrowthEnv",
]
