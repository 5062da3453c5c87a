"""VectorGrowthEnv: worker processes, auto-reset, seeds, and determinism across worker counts."""

from __future__ import annotations

import pytest
import torch

from esper.contracts.actions import ActionSpace, Op
from esper.growth_rl.environment import EnvConfig
from esper.growth_rl.training import EVENT_TYPES as PPO_EVENT_TYPES
from esper.growth_rl.vector_env import EnvWorkerError, VectorGrowthEnv, episode_seed
from esper.rl.policy import RecurrentActorCritic
from esper.telemetry import events as ev
from esper.training.config import TrainConfig

N_ENVS = 3
LENGTH = 2
CONFIG = EnvConfig(train=TrainConfig(task="mnist1d-blind", max_batches_per_epoch=1), episode_length=LENGTH)


def rollout(n_workers: int, steps: int = LENGTH + 1) -> dict[str, list]:
    """Reset, then `steps` steps of a seeded random policy (crossing one auto-reset)."""
    events: list[ev.TelemetryEvent] = []
    with VectorGrowthEnv([CONFIG] * N_ENVS, n_workers, base_seed=7, emit=events.append) as vec:
        obs, masks = vec.reset(episode=0)
        assert vec.layout is not None and obs.shape == (N_ENVS, vec.layout.dim)
        space = ActionSpace(len(vec.layout.slot_ids), len(vec.layout.blueprints))
        torch.manual_seed(0)
        policy = RecurrentActorCritic(vec.layout.dim, space, hidden=16, lstm_hidden=16, head_hidden=8)
        generator = torch.Generator().manual_seed(0)
        state = policy.initial_state(N_ENVS)
        record: dict[str, list] = {"obs": [obs], "reward": [], "done": [], "masks": [masks.tensors()]}
        for _ in range(steps):
            out = policy.act(obs, state, masks, generator=generator)
            state = policy.reset_state(out.state, torch.zeros(N_ENVS, dtype=torch.bool))
            obs, reward, done, masks = vec.step(out.actions)
            record["obs"].append(obs)
            record["reward"].append(reward)
            record["done"].append(done)
            record["masks"].append(masks.tensors())
        record["completed"] = vec.drain_completed()
        record["events"] = [(e.type, e.env, e.epoch) for e in events]
        record["totals"] = [e.total for e in events if isinstance(e, ev.RewardComputed)]
    return record


def test_one_and_two_workers_give_identical_results() -> None:
    one, two = rollout(1), rollout(2)
    for key in ("obs", "reward", "done"):
        assert all(torch.equal(a, b) for a, b in zip(one[key], two[key], strict=True)), key
    for a, b in zip(one["masks"], two["masks"], strict=True):
        assert all(torch.equal(a[name], b[name]) for name in a)
    assert one["events"] == two["events"] and one["totals"] == two["totals"]
    assert [c["seed"] for c in one["completed"]] == [episode_seed(7, 0, N_ENVS, k) for k in range(N_ENVS)]
    assert [c["env"] for c in one["completed"]] == list(range(N_ENVS))
    # every env finished its episode at step LENGTH and auto-reset into episode 1
    assert one["done"][LENGTH - 1].all() and not one["done"][0].any()
    assert not torch.equal(one["obs"][LENGTH], one["obs"][0])  # the new episode has other seeds
    # events: one RewardComputed per env and step, tagged with its env, in env order per step
    rewards = [(t, e) for t, e, _ in one["events"] if t == "reward_computed"]
    assert rewards == [("reward_computed", k) for _ in range(LENGTH + 1) for k in range(N_ENVS)]
    # envs are independent: distinct seeds give distinct observations
    assert not torch.equal(one["obs"][0][0], one["obs"][0][1])


def test_in_process_envs_match_a_fresh_reset_of_the_same_episode() -> None:
    """Resetting to episode 1 gives what the auto-reset at the end of episode 0 gave."""
    straight = rollout(0)
    with VectorGrowthEnv([CONFIG] * N_ENVS, 0, base_seed=7) as vec:
        obs, _ = vec.reset(episode=1)
    assert torch.equal(obs, straight["obs"][LENGTH])


def test_bad_arguments_and_worker_errors_are_reported() -> None:
    with pytest.raises(ValueError, match="at least one EnvConfig"):
        VectorGrowthEnv([], 1)
    with pytest.raises(ValueError, match="n_workers: expected an int >= 0"):
        VectorGrowthEnv([CONFIG], -1)
    other = EnvConfig(train=CONFIG.train, episode_length=LENGTH + 1)
    with pytest.raises(ValueError, match="same episode_length"):
        VectorGrowthEnv([CONFIG, other], 0)
    bad_task = EnvConfig(train=TrainConfig(task="no-such-task"), episode_length=LENGTH)
    with pytest.raises(ValueError, match="unknown task 'no-such-task'"):
        VectorGrowthEnv([bad_task], 0)
    with VectorGrowthEnv([CONFIG], 0) as vec:
        vec.reset(0)
        with pytest.raises(ValueError, match=r"expected actions \(K=1, 8\)"):
            vec.step(torch.zeros(2, 8, dtype=torch.long))
        with pytest.raises(ValueError, match="op FOSSILIZE is not allowed"):
            vec.step(torch.tensor([[4, 0, 0, 0, 0, 0, 0, 0]]))


def test_errors_inside_a_worker_carry_their_traceback() -> None:
    bad_task = EnvConfig(train=TrainConfig(task="no-such-task"), episode_length=LENGTH)
    with pytest.raises(EnvWorkerError, match=r"(?s)worker 0 failed.*unknown task 'no-such-task'"):
        VectorGrowthEnv([bad_task], 1)


def test_the_ppo_run_receives_each_environment_decision() -> None:
    """esper ppo's events.jsonl records every non-WAIT decision with its env (when seeds were planted)."""
    events: list[ev.TelemetryEvent] = []
    with VectorGrowthEnv([CONFIG] * 2, 0, base_seed=7, event_types=PPO_EVENT_TYPES, emit=events.append) as vec:
        vec.reset(episode=0)
        wait = [0] * 8
        germinate = [int(Op.GERMINATE), 0, 0, 0, 0, 2, 0, 0]  # slot 0, first blueprint
        vec.step(torch.tensor([wait, germinate]))
    decisions = [e for e in events if isinstance(e, ev.ControllerDecision)]
    assert [(e.env, e.op, e.executed) for e in decisions] == [(1, "GERMINATE", True)]
    assert decisions[0].slot is not None and decisions[0].blueprint is not None
