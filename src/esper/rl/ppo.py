"""Recurrent PPO for the factored controller, readable top to bottom.

1. PPOConfig: every hyperparameter, with the usual PPO defaults for recurrent policies.
2. PPOTrainer.collect_rollout: run the vectorised environment for one rollout,
   normalising observations/rewards and storing exactly what the policy saw.
3. PPOTrainer.update: clipped-surrogate PPO over env-major recurrent minibatches,
   with credit only for the heads that mattered for each op.
4. state_dict / load_state_dict: policy, optimizer, normalisers and counters,
   loadable with torch.load(weights_only=True).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from pydantic import Field
from torch import Tensor, nn

from esper.contracts.actions import HEAD_INDEX
from esper.contracts.config import StrictConfig
from esper.rl.buffer import RolloutBuffer
from esper.rl.distributions import ActionMasks, credit_matrix
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd, check_state_keys
from esper.rl.policy import LSTMState, RecurrentActorCritic


class PPOConfig(StrictConfig):
    lr: float = Field(3e-4, gt=0)
    adam_eps: float = Field(1e-5, gt=0)
    clip: float = Field(0.2, gt=0)  # policy ratio clip, also the value clip range
    gamma: float = Field(0.995, ge=0, le=1)
    gae_lambda: float = Field(0.98, ge=0, le=1)
    value_coef: float = Field(0.5, ge=0)
    clip_value: bool = True
    max_grad_norm: float = Field(1.0, gt=0)
    # Stop the epoch loop (skipping that minibatch's step) once approx KL > 1.5 * target_kl; None: never.
    target_kl: float | None = Field(0.015, gt=0)
    entropy_coef: float = Field(0.05, ge=0)
    entropy_coef_min: float = Field(0.01, ge=0)
    entropy_anneal_rounds: int = Field(100, ge=1)  # rounds over which entropy decays to its floor
    update_epochs: int = Field(4, ge=1)
    n_minibatches: int = Field(2, ge=1)
    normalize_advantages: bool = True
    seed: int = Field(0, ge=0)  # seeds the minibatch shuffling


class VectorEnv(Protocol):
    """What collect_rollout needs from an environment (auto-resetting, batched, torch tensors)."""

    n_envs: int

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, ActionMasks]:
        """actions (N, 8) -> raw obs (N, D) float32, reward (N,) float32, done (N,) bool, masks.

        Where done, the episode ended with this step and the returned obs/masks
        are already the first of the env's next episode.
        """
        ...


@dataclass
class RolloutCarry:
    """What one rollout hands to the next: the pending raw obs, its masks, the LSTM state."""

    obs: Tensor  # (N, D) raw
    masks: ActionMasks
    state: LSTMState
    episode_return: Tensor  # (N,) raw reward summed over the current episode
    # Under a RankSync: every rank's pending raw obs (rank order), gathered by the step that
    # returned them, so the next rollout's first step need not gather them again.
    all_obs: Tensor | None = None


class RankSync(Protocol):
    """What decentralised PPO shares between processes that each step a share of the environments.

    A trainer without one (`sync=None`) is one process with every environment. Under torchrun the
    PPO driver gives it one (esper.growth_rl.rank_sync.DecentralisedSync), so every rank folds all
    ranks' observations and rewards into its normalisers, normalises advantages and stops early on
    global statistics, and steps with the ranks' averaged gradients: the ranks' policies stay equal.
    Each exchange is one collective: a rollout step's (`fold_step`), a minibatch's statistics
    (`minibatch_statistics`) and its gradients (`average_gradients`).
    """

    def fold_observations(self, normalizer: RunningMeanStd, raw: Tensor) -> None:
        """Fold every rank's `raw` observations (rank order = env order) into `normalizer`."""
        ...

    def fold_step(
        self, normalizer: RewardNormalizer | None, reward: Tensor, done: Tensor, next_raw: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Fold every rank's rewards and dones into `normalizer` (if any); returns this rank's
        normalised rewards and every rank's `next_raw`, in rank order."""
        ...

    def minibatch_statistics(
        self, approx_kl: float, clip_fraction: float, advantages: Tensor | None
    ) -> tuple[float, float, Tensor | None]:
        """Global mean KL and clip fraction, and `advantages` normalised with global moments."""
        ...

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None: ...


class PPOTrainer:
    def __init__(
        self,
        policy: RecurrentActorCritic,
        config: PPOConfig,
        obs_normalizer: RunningMeanStd | None = None,
        reward_normalizer: RewardNormalizer | None = None,
        sync: RankSync | None = None,
    ) -> None:
        self.policy = policy
        self.sync = sync
        self.config = config
        self.obs_normalizer = obs_normalizer
        self.reward_normalizer = reward_normalizer
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr, eps=config.adam_eps)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.updates = 0  # completed update() calls

    # ---- acting --------------------------------------------------------------
    def start_carry(self, obs: Tensor, masks: ActionMasks) -> RolloutCarry:
        """The carry for freshly reset environments (obs raw, (N, D))."""
        n = obs.shape[0]
        return RolloutCarry(obs, masks, self.policy.initial_state(n), torch.zeros(n))

    def normalize_obs(self, raw: Tensor, update: bool, all_ranks: Tensor | None = None) -> Tensor:
        """`raw` normalised, after folding it into the statistics when `update`. Under a RankSync the
        statistics take every rank's observations: `all_ranks` when the caller gathered them already."""
        if self.obs_normalizer is None:
            return raw
        if update:
            # Under torchrun every rank folds in all ranks' observations (rank order = env order).
            if all_ranks is not None:
                self.obs_normalizer.update(all_ranks)
            elif self.sync is not None:
                self.sync.fold_observations(self.obs_normalizer, raw)
            else:
                self.obs_normalizer.update(raw)
        return self.obs_normalizer.normalize(raw)

    @torch.no_grad()
    def collect_rollout(
        self,
        env: VectorEnv,
        buffer: RolloutBuffer,
        carry: RolloutCarry,
        generator: torch.Generator | None = None,
    ) -> tuple[RolloutCarry, list[float]]:
        """Fill `buffer` with one rollout; return the next carry and the raw returns of finished episodes."""
        obs_raw, masks, state = carry.obs, carry.masks, carry.state
        all_obs = carry.all_obs if self.sync is not None else None
        episode_return = carry.episode_return.clone()
        finished: list[float] = []
        buffer.start(state)
        for _ in range(buffer.n_steps):
            obs = self.normalize_obs(obs_raw, update=True, all_ranks=all_obs)
            out = self.policy.act(obs, state, masks, generator=generator)
            next_obs_raw, reward, done, next_masks = env.step(out.actions)
            reward_norm = reward
            if self.sync is not None:
                # One collective per step: the rewards' and the next observations' exchange.
                reward_norm, all_obs = self.sync.fold_step(self.reward_normalizer, reward, done, next_obs_raw)
            elif self.reward_normalizer is not None:
                self.reward_normalizer.update(reward, done)
                reward_norm = self.reward_normalizer.normalize(reward)
            # `obs` (normalised, as acted on) is stored, never obs_raw: see buffer.py.
            buffer.add(obs, out.actions, out.log_prob, out.value, reward, reward_norm, done, masks)
            episode_return += reward
            finished.extend(episode_return[done].tolist())
            episode_return[done] = 0.0
            state = self.policy.reset_state(out.state, done)
            obs_raw, masks = next_obs_raw, next_masks
        # Bootstrap from the pending obs without updating the normaliser: the
        # next rollout's first step updates it and stores what it then acts on.
        last_value = self.policy.value(self.normalize_obs(obs_raw, update=False), state)
        buffer.finish(last_value, self.config.gamma, self.config.gae_lambda)
        return RolloutCarry(obs_raw, masks, state, episode_return, all_obs), finished

    # ---- learning ------------------------------------------------------------
    def entropy_coef(self, round_index: int) -> float:
        """Linear anneal from entropy_coef to entropy_coef_min over entropy_anneal_rounds."""
        cfg = self.config
        progress = min(1.0, max(0, round_index) / cfg.entropy_anneal_rounds)
        return cfg.entropy_coef + (cfg.entropy_coef_min - cfg.entropy_coef) * progress

    def update(self, buffer: RolloutBuffer, round_index: int) -> dict[str, float]:
        cfg = self.config
        ent_coef = self.entropy_coef(round_index)
        credit = credit_matrix()
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0, "grad_norm": 0.0}
        kls: list[float] = []
        steps = 0
        epochs_run = 0
        kl_stopped = False

        for _epoch in range(cfg.update_epochs):
            epochs_run += 1
            for mb in buffer.minibatches(cfg.n_minibatches, self.generator):
                new = self.policy.evaluate(mb.obs, mb.initial_state, mb.actions, mb.masks, mb.dones)
                # Joint ratio over the credited heads only (their log-probs are summed in evaluate).
                log_ratio = new.log_prob - mb.log_probs
                ratio = log_ratio.exp()
                advantages = mb.advantages
                normalized: Tensor | None = None  # the globally normalised advantages, under a RankSync
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean().item()
                    clip_fraction = ((ratio - 1).abs() > cfg.clip).float().mean().item()
                    if self.sync is not None:  # every rank must stop early at the same step
                        # One all-reduce with the advantages' moments (unused if the KL stops here).
                        approx_kl, clip_fraction, normalized = self.sync.minibatch_statistics(
                            approx_kl, clip_fraction, advantages if cfg.normalize_advantages else None
                        )
                kls.append(approx_kl)
                if cfg.target_kl is not None and approx_kl > 1.5 * cfg.target_kl:
                    kl_stopped = True
                    break

                if normalized is not None:
                    advantages = normalized
                elif cfg.normalize_advantages and self.sync is None:
                    advantages = (advantages - advantages.mean()) / (advantages.std(unbiased=False) + 1e-8)
                surrogate = -advantages * ratio
                surrogate_clipped = -advantages * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)
                policy_loss = torch.max(surrogate, surrogate_clipped).mean()

                if cfg.clip_value:
                    value_clipped = mb.values + (new.value - mb.values).clamp(-cfg.clip, cfg.clip)
                    value_loss = (
                        0.5
                        * torch.max((new.value - mb.returns) ** 2, (value_clipped - mb.returns) ** 2).mean()
                    )
                else:
                    value_loss = 0.5 * ((new.value - mb.returns) ** 2).mean()

                # Sum of credited heads' normalised entropies per step, averaged over steps.
                entropy = new.entropy.mean()
                loss = policy_loss - ent_coef * entropy + cfg.value_coef * value_loss

                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.sync is not None:
                    self.sync.average_gradients(self.policy.parameters())
                grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                self.optimizer.step()

                n_credited = credit[mb.actions[..., HEAD_INDEX["op"]]].sum(dim=-1)
                steps += 1
                sums["policy_loss"] += policy_loss.item()
                sums["value_loss"] += value_loss.item()
                sums["entropy"] += (new.entropy.detach().sum() / n_credited.sum()).item()
                sums["clip_fraction"] += clip_fraction
                sums["grad_norm"] += float(grad_norm)
            if kl_stopped:
                break

        self.updates += 1
        metrics = {key: (total / steps if steps else math.nan) for key, total in sums.items()}
        metrics.update(
            approx_kl=sum(kls) / len(kls) if kls else math.nan,
            explained_variance=explained_variance(buffer.values, buffer.returns),
            entropy_coef=ent_coef,
            epochs_run=float(epochs_run),
            minibatch_steps=float(steps),
            kl_stopped=float(kl_stopped),
        )
        return metrics

    # ---- persistence -----------------------------------------------------------
    _KEYS = (
        "policy",
        "optimizer",
        "updates",
        "generator",
        "config",
        "architecture",
        "obs_normalizer",
        "reward_normalizer",
    )

    def state_dict(self) -> dict[str, object]:
        """Everything needed to resume; tensors and primitives only (weights_only-safe)."""
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
            "generator": self.generator.get_state(),
            "config": self.config.model_dump(),
            "architecture": self.policy.architecture(),
            "obs_normalizer": None if self.obs_normalizer is None else self.obs_normalizer.state_dict(),
            "reward_normalizer": None
            if self.reward_normalizer is None
            else self.reward_normalizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        owner = "PPOTrainer"
        check_state_keys(state, self._KEYS, owner)
        saved_config = state["config"]
        current = self.config.model_dump()
        if saved_config != current:
            if not isinstance(saved_config, Mapping):
                raise ValueError(f"{owner}.load_state_dict: 'config' expected a dict, got {saved_config!r}")
            differing = sorted(
                k
                for k in set(current) | set(saved_config)
                if k not in current or k not in saved_config or saved_config[k] != current[k]
            )
            raise ValueError(f"{owner}.load_state_dict: 'config' differs from this trainer's in {differing}")
        if state["architecture"] != self.policy.architecture():
            raise ValueError(
                f"{owner}.load_state_dict: 'architecture' {state['architecture']!r} != "
                f"this policy's {self.policy.architecture()!r}"
            )
        updates = state["updates"]
        if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
            raise ValueError(f"{owner}.load_state_dict: 'updates' expected an int >= 0, got {updates!r}")
        generator_state = state["generator"]
        if not isinstance(generator_state, Tensor) or generator_state.dtype != torch.uint8:
            raise ValueError(f"{owner}.load_state_dict: 'generator' expected a uint8 tensor")
        normalizers = (("obs_normalizer", self.obs_normalizer), ("reward_normalizer", self.reward_normalizer))
        for key, normalizer in normalizers:
            saved = state[key]
            if (saved is None) != (normalizer is None):
                raise ValueError(
                    f"{owner}.load_state_dict: '{key}' is {'absent' if saved is None else 'present'} in the "
                    f"state but this trainer {'has none' if normalizer is None else 'has one'}"
                )
            if saved is not None and not isinstance(saved, Mapping):
                raise ValueError(
                    f"{owner}.load_state_dict: '{key}' expected a dict, got {type(saved).__name__}"
                )
        policy_state, optimizer_state = state["policy"], state["optimizer"]
        if not isinstance(policy_state, Mapping):
            raise ValueError(f"{owner}.load_state_dict: 'policy' expected a dict, got {type(policy_state).__name__}")
        if not isinstance(optimizer_state, dict):
            raise ValueError(
                f"{owner}.load_state_dict: 'optimizer' expected a dict, got {type(optimizer_state).__name__}"
            )
        self.policy.load_state_dict(policy_state, strict=True)
        self.optimizer.load_state_dict(optimizer_state)
        for key, normalizer in normalizers:
            saved = state[key]
            if normalizer is not None and isinstance(saved, Mapping):  # checked above: present and a dict
                normalizer.load_state_dict(saved)
        self.generator.set_state(generator_state)
        self.updates = updates


def explained_variance(predicted: Tensor, target: Tensor) -> float:
    """1 - Var(target - predicted) / Var(target); NaN when the target has no variance."""
    target_var = target.var(unbiased=False).item()
    if target_var == 0.0:
        return math.nan
    return 1.0 - (target - predicted).var(unbiased=False).item() / target_var
