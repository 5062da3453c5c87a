"""PPO agent checkpoints ("esper.agent"): everything needed to resume training or run the policy.

Payload (primitives and tensors only, through esper.checkpoints.io):
  trainer: PPOTrainer.state_dict() (policy weights, optimizer, normalisers,
           PPO hyperparameters, architecture, update counter, shuffle RNG);
           the optimizer's int state keys are stored as strings and its tuples
           as lists, and converted back on load.
  meta:    task, blueprints, slot_ids, action_space, observation layout
           (version, signature, dim), round (completed rounds), rng (action
           sampler state), hyperparameters (the run config), history (per-round stats).

`load_agent` checks the structure strictly; `AgentCheckpoint.check_compatible`
compares it with what the caller expects and names every mismatch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from esper.checkpoints.errors import CheckpointError
from esper.checkpoints.io import load_checkpoint, save_checkpoint, split_header
from esper.contracts.actions import ActionSpace
from esper.contracts.schema import AGENT_CHECKPOINT_FORMAT, AGENT_CHECKPOINT_VERSION
from esper.growth_rl.agent_state import check_agent_payload
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd
from esper.rl.policy import RecurrentActorCritic
from esper.rl.ppo import PPOConfig, PPOTrainer

TRAINER_KEYS = frozenset(
    {"policy", "optimizer", "updates", "generator", "config", "architecture", "obs_normalizer", "reward_normalizer"}
)
META_TYPES: dict[str, type | tuple[type, ...]] = {
    "task": str,
    "blueprints": list,
    "slot_ids": list,
    "action_space": dict,
    "observation": dict,
    "round": int,
    "rng": dict,
    "hyperparameters": dict,
    "history": list,
}


class AgentMismatchError(ValueError):
    """An agent checkpoint does not fit what the caller runs (task, layout, architecture...)."""


@dataclass
class AgentMeta:
    task: str
    blueprints: list[str]
    slot_ids: list[str]
    observation: dict[str, Any]  # {"version": int, "signature": str, "dim": int}
    round: int
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def action_space(self) -> ActionSpace:
        return ActionSpace(len(self.slot_ids), len(self.blueprints))

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "blueprints": list(self.blueprints),
            "slot_ids": list(self.slot_ids),
            "action_space": self.action_space.to_dict(),
            "observation": dict(self.observation),
            "round": self.round,
            "rng": dict(self.rng),
            "hyperparameters": self.hyperparameters,
            "history": list(self.history),
        }


# ---------------------------------------------------------------- optimizer state
def optimizer_to_primitives(state: Mapping[str, Any]) -> dict[str, Any]:
    """torch optimizer state_dict -> str keys and lists (weights_only- and check_primitive_tree-safe)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return {
        "state": {str(k): plain(v) for k, v in state["state"].items()},
        "param_groups": plain(state["param_groups"]),
    }


def optimizer_from_primitives(saved: Mapping[str, Any], template: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Undo optimizer_to_primitives, using a fresh optimizer's state_dict as the template for types."""
    if not isinstance(saved, Mapping) or set(saved) != {"state", "param_groups"}:
        found = sorted(saved) if isinstance(saved, Mapping) else type(saved).__name__
        raise CheckpointError.at(where, f"expected keys ['param_groups', 'state'], got {found}")
    state = {}
    for key, value in saved["state"].items():
        if not key.isdigit():
            raise CheckpointError.at(f"{where} > state > {key}", "expected a parameter index")
        state[int(key)] = value
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(template["param_groups"]):
        raise CheckpointError.at(
            f"{where} > param_groups", f"expected {len(template['param_groups'])} groups, got {groups!r:.80}"
        )
    restored = []
    for index, (group, fresh) in enumerate(zip(groups, template["param_groups"], strict=True)):
        if set(group) != set(fresh):
            raise CheckpointError.at(
                f"{where} > param_groups > [{index}]",
                f"expected keys {sorted(fresh)}, got {sorted(group)}",
            )
        restored.append(
            {k: tuple(v) if isinstance(fresh[k], tuple) and isinstance(v, list) else v for k, v in group.items()}
        )
    return {"state": state, "param_groups": restored}


# ---------------------------------------------------------------- save / load
def save_agent(path: str | os.PathLike[str], trainer: PPOTrainer, meta: AgentMeta) -> None:
    """Write the agent atomically; refuses a meta that does not describe this trainer's network."""
    arch = trainer.policy.architecture()
    if arch["obs_dim"] != meta.observation["dim"]:
        raise ValueError(
            f"save_agent: policy obs_dim {arch['obs_dim']} != meta observation dim {meta.observation['dim']}"
        )
    if (arch["n_slots"], arch["n_blueprints"]) != (len(meta.slot_ids), len(meta.blueprints)):
        raise ValueError(
            f"save_agent: policy action space ({arch['n_slots']} slots, {arch['n_blueprints']} blueprints) does not "
            f"match meta ({len(meta.slot_ids)} slots, {len(meta.blueprints)} blueprints)"
        )
    state = trainer.state_dict()
    state["policy"] = dict(state["policy"])  # type: ignore[call-overload]  # an OrderedDict is not a plain dict
    # Ignored below: the optimizer's own state_dict.
    state["optimizer"] = optimizer_to_primitives(state["optimizer"])  # type: ignore[arg-type]
    payload = {"trainer": state, "meta": meta.to_dict()}
    save_checkpoint(payload, path, format=AGENT_CHECKPOINT_FORMAT, schema_version=AGENT_CHECKPOINT_VERSION)


@dataclass
class AgentCheckpoint:
    trainer_state: dict[str, Any]
    meta: AgentMeta
    header: dict[str, Any]
    path: str

    @property
    def architecture(self) -> dict[str, Any]:
        return self.trainer_state["architecture"]

    @property
    def ppo_config(self) -> PPOConfig:
        return PPOConfig.model_validate(self.trainer_state["config"])

    def build_policy(self) -> RecurrentActorCritic:
        policy = RecurrentActorCritic.from_architecture(self.architecture)
        policy.load_state_dict(self.trainer_state["policy"], strict=True)
        return policy

    def build_obs_normalizer(self) -> RunningMeanStd | None:
        saved = self.trainer_state["obs_normalizer"]
        if saved is None:
            return None
        normalizer = RunningMeanStd(self.architecture["obs_dim"], frozen=True)
        normalizer.load_state_dict(saved)
        normalizer.frozen = True
        return normalizer

    def build_trainer(self) -> PPOTrainer:
        """A trainer in exactly the saved state (weights, optimizer, normalisers, counters)."""
        config = self.ppo_config
        policy = RecurrentActorCritic.from_architecture(self.architecture)
        obs_norm = None if self.trainer_state["obs_normalizer"] is None else RunningMeanStd(policy.obs_dim)
        reward_state = self.trainer_state["reward_normalizer"]
        reward_norm = None
        if reward_state is not None:
            reward_norm = RewardNormalizer(int(reward_state["n_envs"]), config.gamma)
        trainer = PPOTrainer(policy, config, obs_norm, reward_norm)
        state = dict(self.trainer_state)
        state["optimizer"] = optimizer_from_primitives(
            state["optimizer"], trainer.optimizer.state_dict(), "trainer > optimizer"
        )
        trainer.load_state_dict(state)
        return trainer

    def check_compatible(
        self,
        *,
        task: str | None = None,
        blueprints: list[str] | None = None,
        slot_ids: list[str] | None = None,
        observation_signature: str | None = None,
        architecture: Mapping[str, Any] | None = None,
    ) -> None:
        """Raise AgentMismatchError naming every field that differs from what the caller expects."""
        problems = []
        checks = (
            ("task", task, self.meta.task),
            ("blueprints", blueprints, self.meta.blueprints),
            ("slot_ids", slot_ids, self.meta.slot_ids),
            ("observation layout signature", observation_signature, self.meta.observation["signature"]),
            ("architecture", None if architecture is None else dict(architecture), self.architecture),
        )
        for name, expected, found in checks:
            if expected is not None and expected != found:
                problems.append(f"{name}: the agent has {found!r}, expected {expected!r}")
        if problems:
            raise AgentMismatchError(f"agent checkpoint {self.path} does not fit: " + "; ".join(problems))


def _check_meta(meta: Any) -> AgentMeta:
    if not isinstance(meta, dict):
        raise CheckpointError.at("meta", f"expected dict, got {type(meta).__name__}")
    missing = sorted(set(META_TYPES) - set(meta))
    unknown = sorted(set(meta) - set(META_TYPES))
    if missing or unknown:
        raise CheckpointError.many(
            [(f"meta > {k}", "missing required key") for k in missing]
            + [(f"meta > {k}", "unknown key") for k in unknown]
        )
    for key, kind in META_TYPES.items():
        if isinstance(meta[key], bool) or not isinstance(meta[key], kind):
            raise CheckpointError.at(f"meta > {key}", f"expected {kind}, got {type(meta[key]).__name__}")
    for key in ("blueprints", "slot_ids"):
        if not meta[key] or not all(isinstance(v, str) for v in meta[key]):
            raise CheckpointError.at(f"meta > {key}", "expected a non-empty list of str")
    observation = meta["observation"]
    for key, kind in (("version", int), ("signature", str), ("dim", int)):
        if key not in observation or isinstance(observation[key], bool) or not isinstance(observation[key], kind):
            raise CheckpointError.at(f"meta > observation > {key}", f"expected {kind.__name__}")
    if set(observation) != {"version", "signature", "dim"}:
        raise CheckpointError.at("meta > observation", f"unexpected keys {sorted(observation)}")
    expected_space = {"n_slots": len(meta["slot_ids"]), "n_blueprints": len(meta["blueprints"])}
    if meta["action_space"] != expected_space:
        raise CheckpointError.at("meta > action_space", f"expected {expected_space}, got {meta['action_space']}")
    for key, value in meta["rng"].items():
        if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8:
            raise CheckpointError.at(f"meta > rng > {key}", "expected a uint8 generator-state tensor")
    if meta["round"] < 0:
        raise CheckpointError.at("meta > round", f"expected an int >= 0, got {meta['round']}")
    return AgentMeta(
        task=meta["task"],
        blueprints=list(meta["blueprints"]),
        slot_ids=list(meta["slot_ids"]),
        observation=dict(observation),
        round=meta["round"],
        rng=dict(meta["rng"]),
        hyperparameters=meta["hyperparameters"],
        history=list(meta["history"]),
    )


def load_agent(path: str | os.PathLike[str]) -> AgentCheckpoint:
    """Read an agent checkpoint (weights_only) and validate all of it (see esper.growth_rl.agent_state).

    Any problem raises one CheckpointError naming each bad path; a loaded
    agent builds its policy, normalisers and trainer without further errors.
    """
    data = load_checkpoint(path, format=AGENT_CHECKPOINT_FORMAT)
    header, payload = split_header(data)
    try:
        check_agent_payload(payload)
        meta = _check_meta(payload["meta"])
    except CheckpointError as error:
        raise error.with_file(path) from None
    return AgentCheckpoint(trainer_state=payload["trainer"], meta=meta, header=header, path=os.fspath(path))


def _expected_architecture(arch: Any, meta: AgentMeta) -> dict[str, Any]:
    if not isinstance(arch, dict):
        raise CheckpointError.at("trainer > architecture", f"expected dict, got {type(arch).__name__}")
    return {
        **arch,
        "obs_dim": meta.observation["dim"],
        "n_slots": len(meta.slot_ids),
        "n_blueprints": len(meta.blueprints),
    }
