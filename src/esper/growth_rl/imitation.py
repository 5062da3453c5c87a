"""Imitation before PPO: record an expert controller's episodes, then clone them into the policy.

Why: in a growth episode the payoff of a germination arrives 10-15 epochs
later, after a chain of correct ADVANCEs and a FOSSILIZE; a randomly
initialised policy almost never completes that chain, so PPO alone learns
"never grow" (measured: benchmarks/ppo_mnist1d_blind). Starting PPO from a
policy that already grows like the heuristic lets it improve on the heuristic
instead of rediscovering it.

1. collect_demonstrations: `rounds` episodes in every environment, each step
   acting as the expert (GrowthEnv.expert_action) would; rewards go through
   the trainer's reward normaliser and observations through its observation
   normaliser, so PPO starts with their statistics. Observations are stored
   raw and normalised once with the final statistics (nothing acted on them).
   The demonstrations' own telemetry is muted: events.jsonl's rewards are the
   policy's; the expert's returns ride on the ImitationUpdate events.
2. behaviour_clone: `passes` over the demonstrations with the masked,
   credited log-likelihood of the expert's actions (non-WAIT steps weighted
   by `decision_weight`: they are few and they are what matters) plus a
   value regression on the discounted returns, so the critic starts sane.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field, field_validator

from esper import distributed
from esper.contracts.actions import HEAD_INDEX, Op
from esper.contracts.config import StrictConfig
from esper.distributed.collectives import all_reduce_sums
from esper.growth_rl import ppo_run as dppo_run
from esper.growth_rl import rank_sync as dppo
from esper.growth_rl.vector_env import VectorGrowthEnv
from esper.rl.buffer import RolloutBuffer
from esper.rl.ppo import PPOTrainer
from esper.telemetry import events as ev

# Demonstration episodes use episode indices from here on, so their seeds never meet PPO's.
DEMO_EPISODE_OFFSET = 1_000_000
EXPERTS = ("heuristic", "random", "static")


class ImitationConfig(StrictConfig):
    expert: str = "heuristic"  # the controller imitated (a name esper train --controller accepts)
    rounds: int = Field(4, ge=0)  # demonstration episodes per environment; 0: pure PPO
    passes: int = Field(60, ge=1)  # passes of behaviour cloning over all demonstrations
    lr: float = Field(1e-3, gt=0)
    decision_weight: float = Field(4.0, gt=0)  # loss weight of a non-WAIT step (a WAIT step weighs 1)
    value_coef: float = Field(0.5, ge=0)

    @field_validator("expert")
    @classmethod
    def _known_expert(cls, value: str) -> str:
        if value not in EXPERTS:
            raise ValueError(f"expected one of {list(EXPERTS)}, got {value!r}")
        return value


def collect_demonstrations(
    trainer: PPOTrainer, vec: VectorGrowthEnv, config: ImitationConfig, episode_length: int
) -> tuple[list[RolloutBuffer], list[dict[str, Any]]]:
    """`config.rounds` buffers of expert episodes (obs normalised) and the finished episodes' infos."""
    policy = trainer.policy
    n = vec.n_envs
    buffers: list[RolloutBuffer] = []
    zeros = torch.zeros(n)
    all_obs: torch.Tensor | None = None  # under torchrun: every rank's pending raw observations
    with torch.no_grad(), vec.muted():
        obs_raw, masks = vec.reset(episode=DEMO_EPISODE_OFFSET)
        for _ in range(config.rounds):
            buffer = RolloutBuffer(n, episode_length, policy.obs_dim, policy.action_space)
            buffer.start(policy.initial_state(n))
            for _ in range(episode_length):
                if trainer.obs_normalizer is not None and all_obs is not None:
                    trainer.obs_normalizer.update(all_obs)  # every rank's, gathered by the last step
                elif trainer.obs_normalizer is not None and distributed.active():
                    dppo.update_obs_normalizer(trainer.obs_normalizer, obs_raw)
                elif trainer.obs_normalizer is not None:
                    trainer.obs_normalizer.update(obs_raw)
                actions = vec.expert_actions(config.expert)
                next_obs_raw, reward, done, next_masks = vec.step(actions)
                reward_norm = reward
                if distributed.active():  # one collective per step: rewards and next observations
                    reward_norm, all_obs = dppo.fold_step(trainer.reward_normalizer, reward, done, next_obs_raw)
                elif trainer.reward_normalizer is not None:
                    trainer.reward_normalizer.update(reward, done)
                    reward_norm = trainer.reward_normalizer.normalize(reward)
                buffer.add(obs_raw, actions, zeros, zeros, reward, reward_norm, done, masks)
                obs_raw, masks = next_obs_raw, next_masks
            # Values are zero and lambda is 1: the returns are the plain discounted returns.
            buffer.finish(zeros, trainer.config.gamma, 1.0)
            buffers.append(buffer)
        for buffer in buffers:
            buffer.obs = trainer.normalize_obs(buffer.obs, update=False)
    return buffers, vec.drain_completed()


def behaviour_clone(
    trainer: PPOTrainer,
    buffers: list[RolloutBuffer],
    config: ImitationConfig,
    emit: Callable[[ev.TelemetryEvent], None] | None = None,
    context: dict[str, float] | None = None,
) -> dict[str, float]:
    """Fit the policy (and critic) to the demonstrations; returns the last pass's metrics.

    `context` (e.g. the expert's mean return) is added to every pass's ImitationUpdate event.
    """
    if not buffers:
        raise ValueError("behaviour_clone: no demonstrations (imitation.rounds is 0)")
    policy = trainer.policy
    # Its own optimizer: PPO's Adam starts from a clean state, as it would without imitation.
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr, eps=trainer.config.adam_eps)
    metrics: dict[str, float] = {}
    for pass_index in range(config.passes):
        sums = {"bc_loss": 0.0, "value_loss": 0.0, "expert_prob": 0.0}
        batches, decision_prob, decisions = 0, 0.0, 0
        for buffer in buffers:
            for mb in buffer.minibatches(trainer.config.n_minibatches, trainer.generator):
                new = policy.evaluate(mb.obs, mb.initial_state, mb.actions, mb.masks, mb.dones)
                decided = mb.actions[..., HEAD_INDEX["op"]] != int(Op.WAIT)
                weight = torch.where(decided, config.decision_weight, 1.0)
                bc_loss = -(weight * new.log_prob).sum() / weight.sum()
                value_loss = 0.5 * ((new.value - mb.returns) ** 2).mean()
                loss = bc_loss + config.value_coef * value_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if distributed.active():  # decentralised: every rank's policy takes the same step
                    dppo.average_gradients(policy.parameters())
                torch.nn.utils.clip_grad_norm_(policy.parameters(), trainer.config.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    prob = new.log_prob.exp()
                    batches += 1
                    sums["bc_loss"] += bc_loss.item()
                    sums["value_loss"] += value_loss.item()
                    sums["expert_prob"] += prob.mean().item()
                    decision_prob += prob[decided].sum().item()
                    decisions += int(decided.sum())
        metrics = dppo_run.global_means({key: total / batches for key, total in sums.items()})
        prob_sum, decision_count = all_reduce_sums([decision_prob, decisions])  # every rank's decisions
        # Mean probability the policy gives the expert's non-WAIT actions (NaN if the expert never acted).
        metrics["decision_prob"] = prob_sum / decision_count if decision_count else float("nan")
        if emit is not None:
            emit(ev.ImitationUpdate(epoch=0, pass_index=pass_index, metrics={**(context or {}), **metrics}))
    return metrics
