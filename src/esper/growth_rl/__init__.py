"""Growth as an RL problem: the environment a learned controller is trained in, and the PPO driver.

The environment (`environment.GrowthEnv`) and its vectorised form, observations,
exact masks, rewards, action encoding, imitation of the heuristic, the PPO run
(`training`, distributed parts in `ppo_run`), the learned-policy controller and
agent checkpoints (`agent_io`). It sits above `esper.training` and
`esper.control` and learns with the generic core, `esper.rl`.

`esper.growth_rl.GrowthEnv(task=..., episode_length=..., seed=...)` is the
gymnasium environment (`esper.growth_rl.gym_env.GymGrowthEnv`, optional extra
`gym`), loaded on first use so importing esper.growth_rl never needs gymnasium.
Our own PPO drives the environment it wraps, `esper.growth_rl.environment.GrowthEnv`.
"""

from importlib import import_module
from typing import Any

_GYM_NAMES = {"GrowthEnv": "GymGrowthEnv", "GymGrowthEnv": "GymGrowthEnv"}


def __getattr__(name: str) -> Any:
    if name in _GYM_NAMES:
        return getattr(import_module("esper.growth_rl.gym_env"), _GYM_NAMES[name])
    raise AttributeError(f"module 'esper.growth_rl' has no attribute {name!r}")


__all__ = ["GrowthEnv", "GymGrowthEnv"]
