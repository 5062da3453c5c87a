"""GrowthEnv: stepped one action at a time; rewards, events, episode end, rollbacks, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from esper.contracts.actions import ActionSpace, FactoredAction, Op
from esper.growth_rl.environment import EnvConfig, GrowthEnv
from esper.growth_rl.rewards import RewardConfig
from esper.rl.policy import RecurrentActorCritic
from esper.telemetry import events as ev
from esper.training.config import GovernorConfig, TrainConfig
from esper.training.governor import GovernorVerdict

WAIT = FactoredAction(0, 0, 0, 0, 0, 0, 0, 0)


def config(length: int = 3, **train: object) -> EnvConfig:
    return EnvConfig(
        train=TrainConfig(task="mnist1d-blind", max_batches_per_epoch=2, **train),  # type: ignore[arg-type]
        episode_length=length,
    )


def play(env: GrowthEnv, seed: int, policy_seed: int = 0) -> tuple[list[torch.Tensor], list[float], list[dict]]:
    """One episode with a seeded random policy over the masks."""
    obs, masks = env.reset(seed)
    assert env.layout is not None and env.space is not None
    torch.manual_seed(policy_seed)
    policy = RecurrentActorCritic(env.layout.dim, env.space, hidden=16, lstm_hidden=16, head_hidden=8)
    generator = torch.Generator().manual_seed(policy_seed)
    state = policy.initial_state(1)
    observations, rewards, infos = [obs], [], []
    done = False
    while not done:
        out = policy.act(obs.unsqueeze(0), state, masks.apply(lambda t: t.unsqueeze(0)), generator=generator)
        state = out.state
        obs, reward, done, info, masks = env.step(out.actions[0])
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
    return observations, rewards, infos


def test_an_episode_is_episode_length_steps_with_events_and_a_final_summary() -> None:
    events: list[ev.TelemetryEvent] = []
    env = GrowthEnv(config(length=4), emit=events.append, env_index=3)
    observations, rewards, infos = play(env, seed=1)
    assert len(rewards) == 4 and env.run is not None and env.run.epoch == 4
    assert all(o.shape == (env.layout.dim,) and o.dtype == torch.float32 for o in observations)  # type: ignore[union-attr]
    reward_events = [e for e in events if isinstance(e, ev.RewardComputed)]
    assert [e.env for e in reward_events] == [3] * 4
    assert [e.total for e in reward_events] == pytest.approx(rewards)
    for event in reward_events:  # reward terms sum to the total; shapley/ entries are telemetry only
        terms = {k: v for k, v in event.components.items() if "/" not in k}
        assert sum(terms.values()) == pytest.approx(event.total)
    final = infos[-1]
    assert "terminal" in final["reward_components"]
    assert 0.0 <= final["final_val_accuracy"] <= 1.0
    assert final["episode_return"] == pytest.approx(sum(rewards))
    assert final["seed"] == 1 and isinstance(final["shapley"], dict)
    assert "final_val_accuracy" not in infos[0]
    with pytest.raises(ValueError, match="episode is over"):
        env.step(WAIT)


def test_step_before_reset_and_refused_actions_raise() -> None:
    env = GrowthEnv(config())
    with pytest.raises(ValueError, match="call reset"):
        env.step(WAIT)
    env.reset(0)
    with pytest.raises(ValueError, match="op FOSSILIZE is not allowed"):
        env.step(FactoredAction(int(Op.FOSSILIZE), 0, 0, 0, 0, 0, 0, 0))
    with pytest.raises(ValueError, match=r"FactoredAction\.slot: expected an index < 3"):
        env.step([1, 7, 0, 0, 0, 0, 0, 0])
    _, _, done, info, _ = env.step(torch.tensor([int(Op.GERMINATE), 0, 0, 0, 0, 2, 0, 0]))
    assert info["op"] == "GERMINATE" and not done
    assert info["reward_components"]["action_cost"] == pytest.approx(-0.02)
    assert env.run is not None and env.run.model.slot("r0c0").state is not None


def test_same_seed_same_episode_and_interleaving_does_not_matter() -> None:
    alone = play(GrowthEnv(config()), seed=5)
    again = play(GrowthEnv(config()), seed=5)
    assert all(torch.equal(a, b) for a, b in zip(alone[0], again[0], strict=True))
    assert alone[1] == again[1]
    # Two envs stepped alternately in one process: each behaves exactly as alone (own RNG state).
    first, second = GrowthEnv(config()), GrowthEnv(config())
    obs_a, _ = first.reset(5)
    obs_b, _ = second.reset(6)
    assert torch.equal(obs_a, alone[0][0])
    germinate = FactoredAction(int(Op.GERMINATE), 0, 0, 0, 0, 2, 0, 0)
    results = []
    for env in (first, second, first, second):
        results.append(env.step(germinate if env.steps == 0 else WAIT))
    solo = GrowthEnv(config())
    solo.reset(5)
    solo_results = [solo.step(germinate), solo.step(WAIT)]
    assert torch.equal(results[0][0], solo_results[0][0]) and torch.equal(results[2][0], solo_results[1][0])
    assert results[2][1] == solo_results[1][1]
    assert not torch.equal(obs_a, obs_b)  # different seeds differ


def test_rollback_costs_ten_at_its_step_and_abort_freezes_the_episode(monkeypatch: pytest.MonkeyPatch) -> None:
    env = GrowthEnv(config(length=4, governor=GovernorConfig(max_rollbacks=1)))
    env.reset(2)
    assert env.run is not None
    calls = {"n": 0}

    def check(train_loss: float, epoch: int) -> GovernorVerdict:
        calls["n"] += 1
        return GovernorVerdict(epoch >= 2, "forced by the test")

    monkeypatch.setattr(env.run.governor, "check", check)
    _, reward, done, info, masks = env.step(WAIT)  # epoch 2: first rollback
    assert info["rollback"] and not info["aborted"] and not done
    assert info["reward_components"]["rollback"] == -10.0
    assert math.isnan(env.run.history["train_loss"][-1])
    obs, reward, done, info, masks = env.step(WAIT)  # epoch 3: second rollback > max: abort
    assert info["rollback"] and info["aborted"] and not done
    assert info["reward_components"]["rollback"] == -10.0
    assert masks.op.tolist() == [True] + [False] * 5  # only WAIT from now on
    frozen = obs
    obs, reward, done, info, _ = env.step(WAIT)  # step 3 of 4: frozen, nothing trains
    assert not done and reward == 0.0 and torch.equal(obs, frozen) and env.run.epoch == 3
    with pytest.raises(ValueError, match="op GERMINATE is not allowed"):
        env.step(FactoredAction(int(Op.GERMINATE), 0, 0, 0, 0, 0, 0, 0))
    obs, reward, done, info, _ = env.step(WAIT)
    assert done and reward == 0.0 and torch.equal(obs, frozen)
    assert "final_val_accuracy" in info and info["shapley"] == {}
    assert calls["n"] == 2


def test_reward_modes_end_with_their_terminal() -> None:
    for mode in ("shaped", "simplified", "sparse"):
        cfg = EnvConfig(
            train=TrainConfig(task="mnist1d-blind", max_batches_per_epoch=1),
            episode_length=2,
            reward=RewardConfig(mode=mode),
        )
        env = GrowthEnv(cfg)
        env.reset(0)
        _, first, _, info_first, _ = env.step(WAIT)
        _, last, done, info, _ = env.step(WAIT)
        assert done
        accuracy_points = 100.0 * info["final_val_accuracy"]
        if mode == "sparse":
            assert first == 0.0
            assert last == pytest.approx(accuracy_points - 0.1 * info["host_params"] / 500_000)
        else:
            assert info["reward_components"]["terminal"] == pytest.approx(0.05 * accuracy_points)
        if mode == "simplified":
            assert set(info_first["reward_components"]) == {"accuracy_delta", "rent"}


def test_layout_and_space_follow_the_task() -> None:
    env = GrowthEnv(config())
    obs, masks = env.reset(0)
    assert env.layout is not None
    assert env.layout.slot_ids == ("r0c0", "r0c1", "r0c2")
    assert env.space == ActionSpace(3, 5)
    assert obs.shape == (env.layout.dim,)
    masks.apply(lambda t: t.unsqueeze(0)).validate(env.space)
