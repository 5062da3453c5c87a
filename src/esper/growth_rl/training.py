"""The PPO training loop over rounds: one round = one episode in each of K environments, then one update.

Outputs in the run directory, rewritten after every round so an interrupted
run loses at most the round in progress:
  agent.pt      the agent (esper.growth_rl.agent_io), resumable bit-for-bit on CPU;
  events.jsonl  RewardComputed per step (tagged with its env) and PpoUpdate per round;
  learning.png  returns, accuracy, entropy and action mix over rounds.

Env k's episode in round r uses seed `seed + r * K + k`; a resumed run resets
its environments to the episode of its next round, which is exactly what the
uninterrupted run's auto-reset produced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, SerializationInfo, ValidationError, field_serializer, model_validator

from esper import distributed
from esper.contracts.actions import HEAD_INDEX, ActionSpace, Op
from esper.contracts.config import StrictConfig
from esper.contracts.validation import ConfigProblems, describe_validation_error, problem_parts
from esper.control.heuristic import HeuristicConfig
from esper.growth_rl import ppo_run as dppo_run
from esper.growth_rl.agent_io import AgentCheckpoint, AgentMeta, AgentMismatchError, load_agent, save_agent
from esper.growth_rl.environment import EnvConfig
from esper.growth_rl.imitation import ImitationConfig, behaviour_clone, collect_demonstrations
from esper.growth_rl.learning_report import render_learning
from esper.growth_rl.rank_sync import DecentralisedSync
from esper.growth_rl.rewards import RewardConfig
from esper.growth_rl.vector_env import VectorGrowthEnv
from esper.random_stream import discarded_draws, seeded_draws
from esper.rl.buffer import RolloutBuffer
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd
from esper.rl.policy import RecurrentActorCritic
from esper.rl.ppo import PPOConfig, PPOTrainer
from esper.telemetry import events as ev
from esper.telemetry.backends import build_backends
from esper.telemetry.hub import TelemetryHub
from esper.training.config import TrainConfig

AGENT_NAME = "agent.pt"
LEARNING_NAME = "learning.png"
# What the environments' runs write to events.jsonl: each step's reward and every non-WAIT decision
# (op, slot, blueprint, epoch, env), so when a policy germinates and advances can be read back, and
# each env's epoch metrics, so `esper watch` can show every environment's accuracy and seeds.
EVENT_TYPES: frozenset[str] = frozenset(
    {"reward_computed", "governor_action", "controller_decision", "epoch_metrics"}
)
# Settings that may change on resume without changing what is learned.
RESUMABLE_CHANGES = frozenset({"rounds", "workers"})
DEFAULT_TASK = "mnist1d-blind"
# TrainConfig keys every episode sets itself, and where to set them instead.
RUN_OWNED_TRAIN_KEYS: dict[str, str] = {
    "seed": "set by the PPO run: use seed (each episode's seed derives from it)",
    "epochs": "set by the PPO run: use episode_length",
    "controller": "set by the PPO run: the policy being trained is the controller",
}


class PolicyShape(StrictConfig):
    """Widths of the recurrent actor-critic (esper.rl.policy.RecurrentActorCritic)."""

    hidden: int = Field(128, ge=1)  # the feature net before the LSTM
    lstm_hidden: int = Field(128, ge=1)
    head_hidden: int = Field(64, ge=1)  # each action head and the critic


class PPORunConfig(StrictConfig):
    """Every setting of `esper ppo`, one tree: the top-level keys shape the run, each table is
    one component's config (train: TrainConfig, reward: RewardConfig, ppo: PPOConfig,
    policy: PolicyShape, imitation: ImitationConfig).

    Validated once, when the command starts (config file and flags merged), with every problem
    named by its full key path; then frozen and handed down: the environments get `train` as
    the validated TrainConfig object. Every key and default: docs/ppo-config.md.
    """

    task: str = DEFAULT_TASK
    envs: int = Field(8, ge=1)
    rounds: int = Field(10, ge=1)  # total rounds (a resumed run continues up to this many)
    episode_length: int = Field(25, ge=1)
    workers: int = Field(2, ge=0)  # 0: environments in this process
    seed: int = Field(0, ge=0)
    # Every environment's growth run: any TrainConfig key but those in RUN_OWNED_TRAIN_KEYS;
    # its task is always the run's `task`.
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(task=DEFAULT_TASK))
    reward: RewardConfig = Field(default_factory=RewardConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    policy: PolicyShape = Field(default_factory=PolicyShape)
    # Behaviour cloning of an expert before the first PPO round (esper.growth_rl.imitation).
    imitation: ImitationConfig = Field(default_factory=ImitationConfig)

    @model_validator(mode="before")
    @classmethod
    def _train_of_the_run(cls, data: Any) -> Any:
        """The train table runs the run's task; a key each episode sets is refused by its path."""
        if not isinstance(data, dict):
            return data  # pydantic names the wrong type
        # An absent key is the field's default (both are optional), not a guess at malformed data.
        task = data.get("task", DEFAULT_TASK)
        train = data.get("train", {})
        if isinstance(train, TrainConfig):
            train = train.model_dump(exclude_unset=True)
        if not isinstance(train, dict) or not isinstance(task, str):
            return data  # pydantic names the wrong type
        problems: list[tuple[tuple[int | str, ...], str]] = [
            (("train", key), why) for key, why in RUN_OWNED_TRAIN_KEYS.items() if key in train
        ]
        if "task" in train and train["task"] != task:
            problems.append((("train", "task"), f"set by the PPO run: use task (here {task!r}), got {train['task']!r}"))
        if problems:
            raise ConfigProblems(problems)
        return {**data, "train": {**train, "task": task}}

    @model_validator(mode="after")
    def _consistent(self) -> PPORunConfig:
        problems: list[tuple[tuple[int | str, ...], str]] = []
        if self.reward.pbrs_gamma != self.ppo.gamma:
            problems.append((
                ("reward", "pbrs_gamma"),
                f"expected ppo.gamma ({self.ppo.gamma}), got {self.reward.pbrs_gamma}: "
                "potential-based shaping is policy-invariant only with the learner's discount",
            ))
        # The imitation expert builds its HeuristicConfig from this table at each episode: a typo
        # must stop the command now, not after the environments have loaded and trained.
        try:
            HeuristicConfig.model_validate(self.train.heuristic)
        except ValidationError as error:
            problems += [
                (("train", "heuristic", *path), problem) for path, problem in problem_parts(HeuristicConfig, error)
            ]
        if self.ppo.n_minibatches > self.envs:
            problems.append(
                (("ppo", "n_minibatches"), f"expected a value <= envs ({self.envs}), got {self.ppo.n_minibatches}")
            )
        if problems:
            raise ConfigProblems(problems)
        return self

    @field_serializer("train")
    def _train_as_set(self, train: TrainConfig, info: SerializationInfo) -> dict[str, Any]:
        """The keys set in the train table, without the run's task: a dump reads like the config
        file and validates back to this config (agent checkpoints record it this way)."""
        mode = "json" if info.mode_is_json() else "python"
        return train.model_dump(mode=mode, exclude_unset=True, exclude={"task"})

    def env_config(self) -> EnvConfig:
        """Every environment's config; it holds this config's TrainConfig, validated once already."""
        return EnvConfig(train=self.train, episode_length=self.episode_length, reward=self.reward)


def config_error_message(error: ValidationError) -> str:
    """'key: problem' lines; validator messages lose pydantic's 'Value error, ' prefix."""
    return describe_validation_error(PPORunConfig, error)


@dataclass(frozen=True)
class RoundStats:
    round: int
    episodes: int
    mean_return: float
    mean_final_val_accuracy: float
    mean_seed_params: float
    mean_fossilized: float
    entropy: float
    approx_kl: float
    clip_fraction: float
    explained_variance: float
    policy_loss: float
    value_loss: float
    action_mix: dict[str, float]
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """Flat floats for the PpoUpdate event."""
        flat = {k: float(v) for k, v in self.to_dict().items() if k not in ("round", "action_mix")}
        flat.update({f"action_share/{name}": share for name, share in self.action_mix.items()})
        return flat


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _round_stats(
    round_index: int,
    returns: list[float],
    episodes: list[dict[str, Any]],
    metrics: dict[str, float],
    buffer: RolloutBuffer,
    wall: float,
) -> RoundStats:
    ops = buffer.actions[..., HEAD_INDEX["op"]].flatten()
    counts = dppo_run.global_counts(torch.bincount(ops, minlength=len(Op)).double())
    mix = {op.name: float(counts[op] / counts.sum()) for op in Op}
    return RoundStats(
        round=round_index,
        episodes=len(episodes),
        mean_return=_mean(returns),
        mean_final_val_accuracy=_mean([float(e["final_val_accuracy"]) for e in episodes]),
        mean_seed_params=_mean([float(e["seed_params"]) for e in episodes]),
        mean_fossilized=_mean([float(e["fossilized"]) for e in episodes]),
        entropy=metrics["entropy"],
        approx_kl=metrics["approx_kl"],
        clip_fraction=metrics["clip_fraction"],
        explained_variance=metrics["explained_variance"],
        policy_loss=metrics["policy_loss"],
        value_loss=metrics["value_loss"],
        action_mix=mix,
        wall_seconds=wall,
    )


def _by_path(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dump keyed by full key path ("ppo.lr"), so a difference is named at its own key."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_by_path(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resume(checkpoint: AgentCheckpoint, config: PPORunConfig) -> None:
    """The run being resumed must be the same run (only rounds and workers may change)."""
    saved = _by_path(checkpoint.meta.hyperparameters)
    current = _by_path(config.model_dump(mode="json"))
    differing = sorted(
        key
        for key in set(saved) | set(current)
        if key not in RESUMABLE_CHANGES and (key not in saved or key not in current or saved[key] != current[key])
    )
    if differing:
        def shown(values: dict[str, Any], key: str) -> str:
            return repr(values[key]) if key in values else "(absent)"

        details = "; ".join(f"{k}: saved {shown(saved, k)}, now {shown(current, k)}" for k in differing)
        raise AgentMismatchError(f"cannot resume {checkpoint.path}: the run settings differ: {details}")


def _new_trainer(config: PPORunConfig, obs_dim: int, space: ActionSpace) -> PPOTrainer:
    shape = config.policy
    # The policy's initial weights: those a process seeded with the run's seed draws, from
    # generators of the run's own (the process's stay as they were).
    with seeded_draws(config.seed):
        policy = RecurrentActorCritic(obs_dim, space, shape.hidden, shape.lstm_hidden, shape.head_hidden)
    return PPOTrainer(
        policy, config.ppo, RunningMeanStd(obs_dim), RewardNormalizer(config.envs, config.ppo.gamma)
    )


def _imitate(trainer: PPOTrainer, vec: VectorGrowthEnv, config: PPORunConfig, hub: TelemetryHub) -> dict[str, float]:
    """Demonstrations by the expert, then behaviour cloning; returns a summary for the caller."""
    started = time.perf_counter()
    buffers, episodes = collect_demonstrations(trainer, vec, config.imitation, config.episode_length)
    _, episodes = dppo_run.gather_round([], episodes)
    expert = {
        "episodes": float(len(episodes)),
        "expert_mean_return": _mean([float(e["episode_return"]) for e in episodes]),
        "expert_mean_final_val_accuracy": _mean([float(e["final_val_accuracy"]) for e in episodes]),
    }
    metrics = behaviour_clone(trainer, buffers, config.imitation, emit=hub.emit, context=expert)
    return {**expert, **metrics, "wall_seconds": time.perf_counter() - started}


def train_ppo(
    config: PPORunConfig,
    out_dir: Path,
    *,
    resume: Path | None = None,
    on_round: Callable[[RoundStats], None] | None = None,
    on_imitation: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train (or resume) up to `config.rounds` rounds; returns the per-round history."""
    # Checking and rebuilding a saved policy builds networks whose weights the saved ones replace:
    # a throwaway generator takes those draws (the process's generators stay as they were).
    with discarded_draws():
        checkpoint = load_agent(resume) if resume is not None else None
    if checkpoint is not None:
        check_resume(checkpoint, config)
    start = checkpoint.meta.round if checkpoint is not None else 0
    history: list[dict[str, Any]] = list(checkpoint.meta.history) if checkpoint is not None else []
    if start >= config.rounds:
        return history
    # Under torchrun each rank runs its share of the envs (decentralised PPO); rank 0 alone writes.
    share = dppo_run.env_share(config)
    main = distributed.is_main()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    hub = TelemetryHub(build_backends(["jsonl"], out_dir) if main else [])
    # Other ranks' environment events reach rank 0's events.jsonl at the end of each round.
    relay = dppo_run.EventRelay(hub.emit)
    configs = [config.env_config()] * share.count
    with hub, VectorGrowthEnv(
        configs,
        config.workers,
        base_seed=config.seed,
        event_types=EVENT_TYPES,
        emit=relay.emit,
        shard=(share.offset, config.envs),
    ) as vec:
        obs, masks = vec.reset(episode=start)
        layout = vec.layout
        assert layout is not None
        space = ActionSpace(len(layout.slot_ids), len(layout.blueprints))
        sampler = torch.Generator()
        if checkpoint is not None:
            checkpoint.check_compatible(
                task=config.task,
                blueprints=list(layout.blueprints),
                slot_ids=list(layout.slot_ids),
                observation_signature=layout.signature(),
            )
            with discarded_draws():
                trainer = checkpoint.build_trainer()
            sampler.set_state(checkpoint.meta.rng["sampler"])
        else:
            trainer = _new_trainer(config, layout.dim, space)
            sampler.manual_seed(config.seed)
        # Under torchrun each rank steps its share of the environments; what the update reads is global.
        trainer.sync = DecentralisedSync() if distributed.active() else None
        if checkpoint is None and config.imitation.rounds > 0:
            summary = _imitate(trainer, vec, config, hub)
            relay.flush()
            if on_imitation is not None and main:
                on_imitation(summary)
            obs, masks = vec.reset(episode=start)
        carry = trainer.start_carry(obs, masks)
        for round_index in range(start, config.rounds):
            started = time.perf_counter()
            buffer = RolloutBuffer(share.count, config.episode_length, layout.dim, space)
            rank_sampler = dppo_run.sampler_for_round(sampler, config.seed, round_index)
            carry, returns = trainer.collect_rollout(vec, buffer, carry, generator=rank_sampler)
            episodes = vec.drain_completed()
            metrics = dppo_run.global_update_metrics(
                trainer.update(buffer, round_index), buffer.values, buffer.returns
            )
            returns, episodes = dppo_run.gather_round(returns, episodes)
            relay.flush()
            stats = _round_stats(round_index, returns, episodes, metrics, buffer, time.perf_counter() - started)
            hub.emit(ev.PpoUpdate(epoch=config.episode_length, round=round_index, metrics=stats.metrics()))
            history.append(stats.to_dict())
            meta = AgentMeta(
                task=config.task,
                blueprints=list(layout.blueprints),
                slot_ids=list(layout.slot_ids),
                observation=layout.describe(),
                round=round_index + 1,
                rng={"sampler": sampler.get_state()},
                hyperparameters=config.model_dump(mode="json"),
                history=history,
            )
            if not main:
                continue
            save_agent(out_dir / AGENT_NAME, trainer, meta)
            title = f"esper ppo · {config.task} · {config.envs} envs"
            if config.imitation.rounds > 0:
                title += f" · after imitating the {config.imitation.expert}"
            render_learning(history, out_dir / LEARNING_NAME, title)
            if on_round is not None:
                on_round(stats)
    return history
