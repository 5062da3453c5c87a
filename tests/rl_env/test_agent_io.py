"""Agent checkpoints: weights_only round trip (fresh process), strict reading, clear mismatches, exact resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esper.checkpoints.errors import CheckpointError
from esper.checkpoints.io import load_checkpoint, save_checkpoint
from esper.contracts.actions import ActionSpace
from esper.contracts.schema import AGENT_CHECKPOINT_FORMAT, AGENT_CHECKPOINT_VERSION
from esper.growth_rl.agent_io import AgentMeta, AgentMismatchError, load_agent, save_agent
from esper.growth_rl.observations import ObservationLayout
from esper.growth_rl.training import PPORunConfig, check_resume, train_ppo
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd
from esper.rl.policy import RecurrentActorCritic
from esper.rl.ppo import PPOConfig, PPOTrainer

SLOTS = ["r0c0", "r0c1"]
BLUEPRINTS = ["norm", "conv_light", "attention"]
LAYOUT = ObservationLayout(tuple(SLOTS), tuple(BLUEPRINTS))


def trained_trainer() -> PPOTrainer:
    """A trainer whose optimizer and normalisers hold real state."""
    torch.manual_seed(0)
    policy = RecurrentActorCritic(LAYOUT.dim, ActionSpace(2, 3), hidden=16, lstm_hidden=16, head_hidden=8)
    trainer = PPOTrainer(policy, PPOConfig(lr=1e-3), RunningMeanStd(LAYOUT.dim), RewardNormalizer(2, 0.995))
    trainer.obs_normalizer.update(torch.randn(4, LAYOUT.dim))  # type: ignore[union-attr]
    trainer.reward_normalizer.update(torch.tensor([1.0, -2.0]), torch.tensor([False, True]))  # type: ignore[union-attr]
    loss = sum(p.pow(2).sum() for p in policy.parameters())
    loss.backward()  # type: ignore[union-attr]
    trainer.optimizer.step()
    trainer.updates = 3
    return trainer


def meta(round_index: int = 3) -> AgentMeta:
    return AgentMeta(
        task="mnist1d-blind",
        blueprints=list(BLUEPRINTS),
        slot_ids=list(SLOTS),
        observation=LAYOUT.describe(),
        round=round_index,
        rng={"sampler": torch.Generator().manual_seed(5).get_state()},
        hyperparameters={"seed": 0, "envs": 2},
        history=[{"round": 0, "mean_return": 1.5, "action_mix": {"WAIT": 1.0}}],
    )


def test_round_trip_restores_everything(tmp_path: Path) -> None:
    trainer = trained_trainer()
    path = tmp_path / "agent.pt"
    save_agent(path, trainer, meta())
    loaded = load_agent(path)
    assert loaded.meta.round == 3 and loaded.meta.task == "mnist1d-blind"
    assert loaded.meta.observation == LAYOUT.describe()
    assert loaded.meta.history == meta().history
    restored = loaded.build_trainer()
    for (name, a), b in zip(trainer.policy.state_dict().items(), restored.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    original, again = trainer.optimizer.state_dict(), restored.optimizer.state_dict()
    assert original["param_groups"] == again["param_groups"]  # betas are tuples again
    assert set(original["state"]) == set(again["state"]) and all(isinstance(k, int) for k in again["state"])
    for key, state in original["state"].items():
        assert all(torch.equal(state[n], again["state"][key][n]) for n in state)
    assert torch.equal(trainer.obs_normalizer.mean, restored.obs_normalizer.mean)  # type: ignore[union-attr]
    assert torch.equal(trainer.reward_normalizer.var, restored.reward_normalizer.var)  # type: ignore[union-attr]
    assert restored.updates == 3
    assert torch.equal(loaded.meta.rng["sampler"], torch.Generator().manual_seed(5).get_state())
    policy = loaded.build_policy()
    assert torch.equal(policy.encoder[0].weight, trainer.policy.encoder[0].weight)
    assert loaded.build_obs_normalizer().frozen  # type: ignore[union-attr]


def test_loads_with_weights_only_in_a_fresh_process(tmp_path: Path) -> None:
    trainer = trained_trainer()
    path = tmp_path / "agent.pt"
    save_agent(path, trainer, meta())
    script = (
        "import json, sys, torch\n"
        "raw = torch.load(sys.argv[1], weights_only=True)\n"
        "from esper.growth_rl.agent_io import load_agent\n"
        "agent = load_agent(sys.argv[1])\n"
        "weights = agent.build_trainer().policy.state_dict()\n"
        "print(json.dumps({'format': raw['format'], 'round': agent.meta.round,\n"
        "                  'sum': float(sum(t.double().sum() for t in weights.values()))}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = float(sum(t.double().sum() for t in trainer.policy.state_dict().values()))
    assert result == {"format": AGENT_CHECKPOINT_FORMAT, "round": 3, "sum": expected}


def test_mismatches_are_named(tmp_path: Path) -> None:
    path = tmp_path / "agent.pt"
    save_agent(path, trained_trainer(), meta())
    agent = load_agent(path)
    agent.check_compatible(task="mnist1d-blind", blueprints=BLUEPRINTS, observation_signature=LAYOUT.signature())
    with pytest.raises(AgentMismatchError, match=r"task: the agent has 'mnist1d-blind', expected 'mnist1d'"):
        agent.check_compatible(task="mnist1d")
    other = ObservationLayout(tuple(SLOTS), ("norm", "conv_light", "depthwise"))
    with pytest.raises(AgentMismatchError, match="observation layout signature"):
        agent.check_compatible(observation_signature=other.signature())
    with pytest.raises(AgentMismatchError, match="blueprints: the agent has"):
        agent.check_compatible(blueprints=["norm"])
    arch = dict(agent.architecture, hidden=99)
    with pytest.raises(AgentMismatchError, match="architecture"):
        agent.check_compatible(architecture=arch)
    with pytest.raises(ValueError, match="obs_dim"):
        bad = meta()
        bad.observation = {**bad.observation, "dim": 3}
        save_agent(tmp_path / "bad.pt", trained_trainer(), bad)


def test_strict_reading_names_the_bad_path(tmp_path: Path) -> None:
    path = tmp_path / "agent.pt"
    save_agent(path, trained_trainer(), meta())
    loaded = load_checkpoint(path, format=AGENT_CHECKPOINT_FORMAT)
    payload = {k: v for k, v in loaded.items() if k in ("trainer", "meta")}

    def write(mutated: dict) -> Path:
        target = tmp_path / "mutated.pt"
        save_checkpoint(mutated, target, format=AGENT_CHECKPOINT_FORMAT, schema_version=AGENT_CHECKPOINT_VERSION)
        return target

    missing = {"trainer": payload["trainer"], "meta": {k: v for k, v in payload["meta"].items() if k != "round"}}
    with pytest.raises(CheckpointError, match=r"meta > round: missing required key"):
        load_agent(write(missing))
    extra = {"trainer": payload["trainer"], "meta": {**payload["meta"], "surprise": 1}}
    with pytest.raises(CheckpointError, match=r"meta > surprise: unknown key"):
        load_agent(write(extra))
    wrong = {"trainer": payload["trainer"], "meta": {**payload["meta"], "task": 7}}
    with pytest.raises(CheckpointError, match=r"meta > task: expected"):
        load_agent(write(wrong))
    space = {"trainer": payload["trainer"], "meta": {**payload["meta"], "slot_ids": ["r0c0"]}}
    with pytest.raises(CheckpointError, match=r"meta > action_space"):
        load_agent(write(space))
    trainer = {k: v for k, v in payload["trainer"].items() if k != "optimizer"}
    with pytest.raises(CheckpointError, match=r"trainer > optimizer: missing required key"):
        load_agent(write({"trainer": trainer, "meta": payload["meta"]}))
    with pytest.raises(CheckpointError, match=r"expected format 'esper\.agent'"):
        save_checkpoint({"x": 1}, tmp_path / "model.pt", format="esper.model", schema_version=1)
        load_agent(tmp_path / "model.pt")


TINY = {
    "envs": 2,
    "episode_length": 3,
    "workers": 0,
    "train": {"max_batches_per_epoch": 1},
    "policy": {"hidden": 16, "lstm_hidden": 16, "head_hidden": 8},
}


def test_resume_continues_bit_identically(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    split = tmp_path / "split"
    train_ppo(PPORunConfig(rounds=2, **TINY), straight)
    train_ppo(PPORunConfig(rounds=1, **TINY), split)
    first_half = load_agent(split / "agent.pt")
    assert first_half.meta.round == 1
    train_ppo(PPORunConfig(rounds=2, **TINY), split, resume=split / "agent.pt")
    a, b = load_agent(straight / "agent.pt"), load_agent(split / "agent.pt")
    assert b.meta.round == 2
    for name, tensor in a.trainer_state["policy"].items():
        assert torch.equal(tensor, b.trainer_state["policy"][name]), name
    assert torch.equal(a.trainer_state["obs_normalizer"]["mean"], b.trainer_state["obs_normalizer"]["mean"])
    assert [r["mean_return"] for r in a.meta.history] == [r["mean_return"] for r in b.meta.history]
    assert not torch.equal(
        first_half.trainer_state["policy"]["encoder.0.weight"], b.trainer_state["policy"]["encoder.0.weight"]
    )
    # A different run cannot be resumed from this agent.
    with pytest.raises(AgentMismatchError, match=r"seed: saved 0, now 1"):
        check_resume(b, PPORunConfig(rounds=3, seed=1, **TINY))
    check_resume(b, PPORunConfig(rounds=5, **{**TINY, "workers": 2}))  # rounds and workers may change
