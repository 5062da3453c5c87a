"""GymGrowthEnv: one growing-model run as a `gymnasium.Env` (also reachable as `esper.growth_rl.GrowthEnv`).

    env = esper.growth_rl.GrowthEnv(task="mnist1d", episode_length=10, seed=0, max_batches_per_epoch=4)
    obs, info = env.reset()
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample(mask=...))

A thin view of `esper.growth_rl.environment.GrowthEnv` (the environment our own PPO
trains on; same runs, observations, rewards and masks):
- observations: `Box(-inf, inf, (dim,), float32)`, the raw feature vector
  (names in `env.feature_names`);
- actions: `MultiDiscrete` over the eight factored heads (op, slot,
  blueprint, style, tempo, alpha_target, alpha_speed, alpha_curve);
- `action_masks()`: one flat boolean vector, the heads' masks concatenated in
  that order (what sb3-contrib's MaskablePPO expects for MultiDiscrete).
  Masks of independent heads cannot say "slot 2 only for PRUNE": each head
  admits the union over the legal ops, so a sampled combination can still be
  illegal. Such an action is carried out as WAIT and reported in
  `info["action_admitted"]` / `info["refused_because"]` (our own PPO's
  conditional masks never sample one);
- `info["reward_components"]`: the reward terms, which sum to the reward.

An episode is `episode_length` epochs; it ends with `terminated=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import gymnasium as gym
    from gymnasium import spaces
except ModuleNotFoundError as error:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "esper.growth_rl.GrowthEnv (the gymnasium environment) needs gymnasium, which is not installed: "
        "pip install 'esper[gym]' (or pip install gymnasium)"
    ) from error

import numpy as np
import torch

from esper.contracts.actions import HEADS, ActionSpace, FactoredAction, Op
from esper.growth_rl.environment import ENV_OWNED_KEYS, EnvConfig
from esper.growth_rl.environment import GrowthEnv as _RunEnv
from esper.growth_rl.masks import check_admitted
from esper.growth_rl.observations import ObservationLayout
from esper.growth_rl.rewards import RewardConfig
from esper.hosts import build_host
from esper.hosts.protocol import HostProtocol
from esper.random_stream import discarded_draws
from esper.rl.distributions import ActionMasks
from esper.tasks import DEFAULT_TASK, TaskOptions
from esper.training.config import TrainConfig
from esper.training.plan import lookup_task

__all__ = ["GymGrowthEnv", "flat_action_mask"]

_SEED_BOUND = 2**31 - 1


def _union(rows: torch.Tensor, chosen: torch.Tensor) -> np.ndarray:
    """OR of the rows selected by `chosen`; all True when none is selected (the head is then ignored)."""
    if not bool(chosen.any()):
        return np.ones(rows.shape[-1], dtype=bool)
    return rows[chosen].any(dim=0).numpy()


def flat_action_mask(masks: ActionMasks) -> np.ndarray:
    """Per-head masks (each the union over what the other heads may choose), concatenated in HEADS order."""
    op = masks.op
    acting = op.clone()
    acting[Op.WAIT] = False  # WAIT ignores every other head: it must not open them
    slot = _union(masks.slot_by_op, acting)
    n_blueprints = masks.blueprint_by_slot.shape[-1]
    blueprint = (
        _union(masks.blueprint_by_slot, masks.slot_by_op[Op.GERMINATE])
        if bool(op[Op.GERMINATE])
        else np.ones(n_blueprints, dtype=bool)
    )
    parts = {
        "op": op.numpy(),
        "slot": slot,
        "blueprint": blueprint,
        "style": masks.style.numpy(),
        "tempo": masks.tempo.numpy(),
        "alpha_target": masks.alpha_target.numpy(),
        "alpha_speed": masks.alpha_speed.numpy(),
        "alpha_curve": masks.alpha_curve.numpy(),
    }
    return np.concatenate([np.asarray(parts[name], dtype=bool) for name in HEADS])


class GymGrowthEnv(gym.Env):
    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(
        self,
        task: str = DEFAULT_TASK,
        episode_length: int = 25,
        seed: int = 0,
        *,
        reward: RewardConfig | None = None,
        shapley: bool = False,
        **train: Any,
    ) -> None:
        """`train`: other TrainConfig settings (e.g. `max_batches_per_epoch=4`, `blueprints=[...]`);
        `seed` seeds the first reset() without a seed and the draws of later ones."""
        owned = sorted(set(train) & ENV_OWNED_KEYS)
        if owned:
            raise ValueError(f"GrowthEnv: {owned} are set by the environment (seed=, episode_length=), not by train")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _SEED_BOUND:
            raise ValueError(f"GrowthEnv seed: expected an int in [0, {_SEED_BOUND}], got {seed!r}")
        train_config = TrainConfig.model_validate({**train, "task": task, "seed": seed})
        values: dict[str, Any] = {"train": train_config, "episode_length": episode_length, "shapley": shapley}
        if reward is not None:
            values["reward"] = reward
        self.config = EnvConfig.model_validate(values)
        self.base_seed = seed
        task_spec = lookup_task(task)
        options = TaskOptions(
            data_dir=Path(train_config.data_dir) if train_config.data_dir else None,
            text_file=Path(train_config.text_file) if train_config.text_file else None,
            seed=seed,
        )
        splits = task_spec.load_data(options)
        # The slot layout is the task's host's; building it is cheap and trains nothing.
        host_config = {**task_spec.host_config_for(splits), **train_config.host_overrides}
        with discarded_draws():  # its weights are never used: a throwaway generator takes the draws
            # Ignored below: build_host is typed nn.Module; every host kind implements HostProtocol.
            host: HostProtocol = build_host(task_spec.host_kind, host_config)  # type: ignore[assignment]
            slot_ids = tuple(host.slot_ids())
        blueprints = tuple(train_config.blueprints or task_spec.default_blueprints)
        self.layout = ObservationLayout(slot_ids, blueprints)
        self.space = ActionSpace(len(slot_ids), len(blueprints))
        self.feature_names = self.layout.names
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(len(self.layout.names),), dtype=np.float32)
        self.action_space = spaces.MultiDiscrete(np.array(self.space.nvec(), dtype=np.int64))
        self.run_env = _RunEnv(self.config, splits=splits)
        self._masks: ActionMasks | None = None

    # ---------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if seed is None and self._np_random is None:
            seed = self.base_seed  # the first reset of an env nobody seeded: the constructor's seed
        super().reset(seed=seed)
        run_seed = seed if seed is not None else int(self.np_random.integers(0, _SEED_BOUND))
        obs, masks = self.run_env.reset(run_seed)
        self._masks = masks
        return self._obs(obs), {"seed": run_seed}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._masks is None:
            raise ValueError("GrowthEnv.step: call reset() first")
        indices = np.asarray(action).reshape(-1)
        if indices.shape != (len(HEADS),) or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(
                f"GrowthEnv.step action: expected {len(HEADS)} integer head indices {HEADS}, got {action!r}"
            )
        factored = FactoredAction.from_indices([int(i) for i in indices])
        factored.validate(self.space)
        refused = None
        try:
            check_admitted(self._masks, factored)
        except ValueError as error:
            refused = str(error)
            factored = FactoredAction.from_indices([int(Op.WAIT)] + [0] * (len(HEADS) - 1))
        obs, reward, done, info, masks = self.run_env.step(factored)
        self._masks = masks
        info = {**info, "action_admitted": refused is None, "refused_because": refused}
        return self._obs(obs), float(reward), bool(done), False, info

    def action_masks(self) -> np.ndarray:
        """The flat boolean mask over all heads' choices (sb3-contrib MaskablePPO's format)."""
        if self._masks is None:
            raise ValueError("GrowthEnv.action_masks: call reset() first")
        return flat_action_mask(self._masks)

    @staticmethod
    def _obs(obs: torch.Tensor) -> np.ndarray:
        return obs.detach().cpu().numpy().astype(np.float32, copy=True)
