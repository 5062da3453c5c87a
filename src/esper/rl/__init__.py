"""The generic RL core: masked factored policy, normalisers, GAE, rollouts, PPO.

Independent of Esper's model: it imports torch and `esper.contracts` (the action
heads), nothing else of Esper. Decentralised PPO over several processes is a
`RankSync` the trainer is given (esper.growth_rl.rank_sync under torchrun).
Anything that offers the VectorEnv protocol and ActionMasks can be learned
with it. Growth as an RL problem (the environment, observations,
masks, rewards, the PPO driver) is `esper.growth_rl`.
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
