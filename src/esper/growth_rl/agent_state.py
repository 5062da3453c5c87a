"""What a PPO agent checkpoint ("esper.agent") may hold: strict schema, ranges and cross-checks.

`check_agent_payload` validates the whole payload before anything is built
from it: every key and type, the ranges of counters and hyperparameters,
the PPO config (as PPOConfig, every key stored), the network architecture
against the meta (observation size, slots, blueprints, head sizes), the
policy weights against the network the architecture builds (names, shapes,
dtypes), the optimizer state against a fresh optimizer of that network, the
normalisers' statistics (shapes, float64, variances >= 0) and the generator
states. Each problem is one CheckpointError line naming its path.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from esper.checkpoints.errors import CheckpointError, join_path
from esper.checkpoints.run_state import OptimizerState, optimizer_problems, torch_generator_problems
from esper.checkpoints.slot_state import all_required
from esper.checkpoints.strict import validate
from esper.contracts.actions import ActionSpace
from esper.contracts.config import MAX_DIM
from esper.rl.policy import RecurrentActorCritic
from esper.rl.ppo import PPOConfig

__all__ = ["AgentPayload", "check_agent_payload"]

Problems = list[tuple[str, str]]
# torch.Generator.manual_seed takes a seed below 2**64.
_MAX_SEED = 2**64 - 1
Count = Annotated[int, Field(ge=0)]
Size = Annotated[int, Field(ge=1, le=MAX_DIM)]
Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


class ObsNormalizerState(_Strict):
    shape: list[Size]
    mean: torch.Tensor
    var: torch.Tensor
    count: Count
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)]
    clip: Positive
    epsilon: Positive


class RewardNormalizerState(_Strict):
    n_envs: Size
    gamma: Annotated[float, Field(ge=0.0, le=1.0)]
    clip: Positive
    epsilon: Positive
    returns: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor
    count: Count


class Architecture(_Strict):
    obs_dim: Size
    n_slots: Size
    n_blueprints: Size
    head_sizes: dict[str, Size]
    hidden: Size
    lstm_hidden: Size
    head_hidden: Size


class StoredOptimizer(_Strict):
    # Parameter indices are stored as strings (agent checkpoints predate int keys).
    state: dict[str, dict[str, torch.Tensor]]
    param_groups: list[dict[str, Any]]


class TrainerState(_Strict):
    policy: dict[str, torch.Tensor]
    optimizer: StoredOptimizer
    updates: Count
    generator: torch.Tensor
    config: dict[str, Any]
    architecture: Architecture
    obs_normalizer: ObsNormalizerState | None
    reward_normalizer: RewardNormalizerState | None


class Observation(_Strict):
    version: Count
    signature: str
    dim: Size


class StoredActionSpace(_Strict):
    n_slots: Size
    n_blueprints: Size


class Meta(_Strict):
    task: str
    blueprints: list[str]
    slot_ids: list[str]
    action_space: StoredActionSpace
    observation: Observation
    round: Count
    rng: dict[str, torch.Tensor]
    # The run's own config and per-round statistics: free-form primitives, checked by their readers.
    hyperparameters: dict[str, Any]
    history: list[dict[str, Any]]


class AgentPayload(_Strict):
    trainer: TrainerState
    meta: Meta


def check_agent_payload(payload: object) -> AgentPayload:
    """Validate a whole agent payload (without its header); raise one CheckpointError listing every problem."""
    agent = validate(AgentPayload, payload, "")
    problems = _meta_problems(agent.meta)
    problems += _architecture_problems(agent.trainer.architecture, agent.meta)
    config = validate(all_required(PPOConfig), agent.trainer.config, "trainer > config")
    if config.seed > _MAX_SEED:
        problems.append(
            ("trainer > config > seed", f"expected an int < 2**64 (a torch generator seed), got {config.seed}")
        )
    problems += torch_generator_problems(agent.trainer.generator, "trainer > generator")
    for name, state in agent.meta.rng.items():
        problems += torch_generator_problems(state, join_path("meta > rng", name))
    if problems:
        raise CheckpointError.many(problems)
    # The network is buildable now (sizes checked): compare the weights and optimizer state with it.
    policy = RecurrentActorCritic.from_architecture(agent.trainer.architecture.model_dump())
    problems = _policy_problems(agent.trainer.policy, policy)
    problems += _optimizer_problems(agent.trainer.optimizer, policy, PPOConfig.model_validate(agent.trainer.config))
    problems += _normalizer_problems(agent.trainer)
    if problems:
        raise CheckpointError.many(problems)
    return agent


def _meta_problems(meta: Meta) -> Problems:
    problems = []
    for key in ("blueprints", "slot_ids"):
        names = getattr(meta, key)
        if not names or len(set(names)) != len(names) or not all(names):
            problems.append((f"meta > {key}", f"expected a non-empty list of unique non-empty names, got {names}"))
    space = {"n_slots": len(meta.slot_ids), "n_blueprints": len(meta.blueprints)}
    if meta.action_space.model_dump() != space:
        problems.append(("meta > action_space", f"expected {space} (from slot_ids and blueprints)"))
    return problems


def _architecture_problems(arch: Architecture, meta: Meta) -> Problems:
    where = "trainer > architecture"
    expected = {"obs_dim": meta.observation.dim, "n_slots": len(meta.slot_ids), "n_blueprints": len(meta.blueprints)}
    problems = [
        (join_path(where, key), f"expected {value} (from meta), got {getattr(arch, key)}")
        for key, value in expected.items()
        if getattr(arch, key) != value
    ]
    heads = ActionSpace(arch.n_slots, arch.n_blueprints).head_sizes()
    if arch.head_sizes != heads:
        problems.append((join_path(where, "head_sizes"), f"expected {heads} (this version's action space)"))
    return problems


def _policy_problems(stored: dict[str, torch.Tensor], policy: RecurrentActorCritic) -> Problems:
    where = "trainer > policy"
    expected = policy.state_dict()
    problems = [(join_path(where, key), "missing required key") for key in expected if key not in stored]
    problems += [
        (join_path(where, key), "unknown key (the network has no such tensor)") for key in stored if key not in expected
    ]
    for key, tensor in stored.items():
        want = expected.get(key)
        if want is not None and (tensor.shape != want.shape or tensor.dtype != want.dtype):
            problems.append(
                (
                    join_path(where, key),
                    f"expected tensor of shape {tuple(want.shape)} and dtype {want.dtype}, "
                    f"got shape {tuple(tensor.shape)} and dtype {tensor.dtype}",
                )
            )
    return problems


def _optimizer_problems(stored: StoredOptimizer, policy: RecurrentActorCritic, config: PPOConfig) -> Problems:
    where = "trainer > optimizer"
    problems = []
    state: dict[int, dict[str, torch.Tensor | None]] = {}
    for key, entry in stored.state.items():
        if not key.isdigit() or str(int(key)) != key:
            problems.append((join_path(where, "state", key), "expected a parameter index (digits)"))
        else:
            state[int(key)] = dict(entry)
    if problems:
        return problems
    # The trainer's optimizer, as PPOTrainer builds it.
    fresh = torch.optim.Adam(policy.parameters(), lr=config.lr, eps=config.adam_eps)
    return optimizer_problems(OptimizerState(state=state, param_groups=stored.param_groups), fresh, where)


def _normalizer_problems(trainer: TrainerState) -> Problems:
    problems: Problems = []
    obs = trainer.obs_normalizer
    if obs is not None:
        shape = (trainer.architecture.obs_dim,)
        where = "trainer > obs_normalizer"
        if tuple(obs.shape) != shape:
            problems.append(
                (join_path(where, "shape"), f"expected {list(shape)} (the observation size), got {obs.shape}")
            )
        problems += _statistics(where, {"mean": obs.mean, "var": obs.var}, shape)
    reward = trainer.reward_normalizer
    if reward is not None:
        where = "trainer > reward_normalizer"
        problems += _statistics(where, {"returns": reward.returns}, (reward.n_envs,))
        problems += _statistics(where, {"mean": reward.mean, "var": reward.var}, ())
    return problems


def _statistics(where: str, tensors: dict[str, torch.Tensor], shape: tuple[int, ...]) -> Problems:
    """Running statistics: float64 tensors of `shape`; a variance is >= 0."""
    problems = []
    for name, tensor in tensors.items():
        at = join_path(where, name)
        if tensor.dtype != torch.float64 or tuple(tensor.shape) != shape:
            problems.append(
                (at, f"expected a float64 tensor of shape {shape}, got {tensor.dtype} of shape {tuple(tensor.shape)}")
            )
        elif name == "var" and bool((tensor < 0).any()):
            problems.append((at, "expected values >= 0 (a variance)"))
    return problems
