"""Reinforcement learning for the controller: masked factored policy, normalisers, GAE, rollouts, PPO.

Independent of Esper's model: anything that offers the VectorEnv protocol and
ActionMasks can be learned with it.
"""

from esper.rl.buffer import Minibatch, RolloutBuffer
from esper.rl.distributions import ActionMasks, MaskedCategorical, credit_matrix, effective_mask
from esper.rl.gae import compute_gae
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd, check_state_keys
from esper.rl.policy import ActResult, EvaluateResult, LSTMState, RecurrentActorCritic
from esper.rl.ppo import PPOConfig, PPOTrainer, RolloutCarry, VectorEnv, explained_variance

__all__ = [
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
]
