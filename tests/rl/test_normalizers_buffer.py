"""Normalisers (statistics, strict state dicts) and the rollout buffer (what it stores, how it replays)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import torch

from esper.rl.buffer import RolloutBuffer
from esper.rl.distributions import ActionMasks
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd
from esper.rl.policy import RecurrentActorCritic
from esper.rl.ppo import PPOConfig, PPOTrainer

from .toy_env import ACTION_SPACE, EPISODE_LEN, OBS_DIM, ToyVecEnv, single_thread


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


def weights_only_round_trip(state: object) -> object:
    blob = io.BytesIO()
    torch.save(state, blob)
    blob.seek(0)
    return torch.load(blob, weights_only=True)


# ---- RunningMeanStd ----------------------------------------------------------------


def test_running_mean_std_first_update_sets_then_ema() -> None:
    rms = RunningMeanStd(2, momentum=0.9)
    rms.update(torch.tensor([[1.0, 10.0], [3.0, 10.0]]))
    assert rms.mean.tolist() == [2.0, 10.0]
    assert rms.var.tolist() == [1.0, 0.0]
    rms.update(torch.tensor([[6.0, 20.0], [6.0, 20.0]]))
    # mean = 0.9*2 + 0.1*6; var = 0.9*1 + 0.1*0 + 0.9*0.1*(6-2)^2
    assert rms.mean[0].item() == pytest.approx(2.4)
    assert rms.var[0].item() == pytest.approx(0.9 + 0.09 * 16)
    assert rms.var[1].item() == pytest.approx(0.09 * 100)
    assert rms.count == 2


def test_running_mean_std_normalizes_clips_and_freezes() -> None:
    rms = RunningMeanStd(1, clip=3.0)
    rms.update(torch.tensor([[0.0], [2.0]]))  # mean 1, var 1
    out = rms.normalize(torch.tensor([[2.0], [100.0], [-100.0]]))
    assert out.dtype == torch.float32
    assert out[:, 0].tolist() == pytest.approx([1.0, 3.0, -3.0], abs=1e-6)
    rms.frozen = True
    rms.update(torch.tensor([[50.0], [60.0]]))
    assert rms.mean.tolist() == [1.0]
    assert rms.count == 1
    with pytest.raises(ValueError, match="trailing shape"):
        rms.normalize(torch.zeros(3, 2))


def test_running_mean_std_state_dict_is_weights_only_and_strict() -> None:
    rms = RunningMeanStd(3)
    rms.update(torch.randn(5, 3))
    rms.update(torch.randn(5, 3))
    loaded = RunningMeanStd(3)
    loaded.load_state_dict(weights_only_round_trip(rms.state_dict()))
    assert torch.equal(loaded.mean, rms.mean)
    assert torch.equal(loaded.var, rms.var)
    assert loaded.count == 2
    x = torch.randn(4, 3)
    assert torch.equal(loaded.normalize(x), rms.normalize(x))

    state = rms.state_dict()
    del state["var"]
    state["extra"] = 1
    with pytest.raises(ValueError, match=r"missing keys \['var'\], unknown keys \['extra'\]"):
        RunningMeanStd(3).load_state_dict(state)
    with pytest.raises(ValueError, match="'shape' expected"):
        RunningMeanStd(4).load_state_dict(rms.state_dict())
    bad = rms.state_dict()
    bad["count"] = "2"
    with pytest.raises(ValueError, match="'count' expected int"):
        RunningMeanStd(3).load_state_dict(bad)


# ---- RewardNormalizer -----------------------------------------------------------------


def test_reward_normalizer_tracks_discounted_returns() -> None:
    norm = RewardNormalizer(n_envs=2, gamma=0.5)
    norm.update(torch.tensor([1.0, 2.0]), torch.tensor([False, True]))
    assert norm.returns.tolist() == [1.0, 0.0]  # env 1 ended: its return restarts
    norm.update(torch.tensor([4.0, 3.0]), torch.tensor([False, False]))
    assert norm.returns.tolist() == [4.5, 3.0]
    seen = torch.tensor([1.0, 2.0, 4.5, 3.0], dtype=torch.float64)
    assert norm.mean.item() == pytest.approx(seen.mean().item())
    assert norm.var.item() == pytest.approx(seen.var(unbiased=False).item())
    out = norm.normalize(torch.tensor([1.0, -1.0]))
    assert out.tolist() == pytest.approx(
        [1 / seen.std(unbiased=False).item(), -1 / seen.std(unbiased=False).item()]
    )


def test_reward_normalizer_clip_and_strict_state() -> None:
    norm = RewardNormalizer(n_envs=1, gamma=0.9, clip=2.0)
    norm.update(torch.tensor([0.1]), torch.tensor([False]))
    norm.update(torch.tensor([0.2]), torch.tensor([False]))
    assert norm.normalize(torch.tensor([1000.0])).item() == 2.0
    loaded = RewardNormalizer(n_envs=1, gamma=0.9, clip=2.0)
    loaded.load_state_dict(weights_only_round_trip(norm.state_dict()))
    assert torch.equal(loaded.returns, norm.returns)
    assert torch.equal(loaded.var, norm.var)
    assert loaded.count == norm.count
    with pytest.raises(ValueError, match="'n_envs' expected 2"):
        RewardNormalizer(n_envs=2, gamma=0.9).load_state_dict(norm.state_dict())
    state = norm.state_dict()
    del state["returns"]
    with pytest.raises(ValueError, match=r"missing keys \['returns'\]"):
        loaded.load_state_dict(state)
    with pytest.raises(ValueError, match="'dones' expected dtype"):
        norm.update(torch.tensor([1.0]), torch.tensor([0.0]))


# ---- RolloutBuffer ----------------------------------------------------------------------


def make_trainer(n_envs: int, seed: int = 0) -> tuple[PPOTrainer, ToyVecEnv]:
    torch.manual_seed(seed)
    policy = RecurrentActorCritic(OBS_DIM, ACTION_SPACE, hidden=32, lstm_hidden=32, head_hidden=16)
    config = PPOConfig()
    trainer = PPOTrainer(policy, config, RunningMeanStd(OBS_DIM), RewardNormalizer(n_envs, config.gamma))
    return trainer, ToyVecEnv(n_envs, seed=seed)


def test_buffer_stores_exactly_the_observations_the_policy_acted_on() -> None:
    n_envs, n_steps = 4, 2 * EPISODE_LEN
    trainer, env = make_trainer(n_envs)
    seen: list[torch.Tensor] = []
    original_act = trainer.policy.act

    def recording_act(obs, state, masks, deterministic=False, generator=None):
        seen.append(obs.clone())
        return original_act(obs, state, masks, deterministic=deterministic, generator=generator)

    trainer.policy.act = recording_act  # type: ignore[method-assign]
    buffer = RolloutBuffer(n_envs, n_steps, OBS_DIM, ACTION_SPACE)
    raw_obs, masks = env.reset()
    carry = trainer.start_carry(raw_obs, masks)
    raws = []
    for _ in range(2):  # two rollouts: the normaliser keeps moving between and within them
        raws.append(carry.obs)
        carry, _ = trainer.collect_rollout(env, buffer, carry)
    assert len(seen) == 2 * n_steps
    second = seen[n_steps:]
    for t in range(n_steps):
        assert torch.equal(buffer.obs[t], second[t])  # bit-identical
    # and it matters: re-normalising the first raw obs with today's statistics differs
    assert not torch.equal(trainer.obs_normalizer.normalize(raws[1]), buffer.obs[0])
    assert not torch.equal(raws[1], buffer.obs[0])


def test_minibatch_replay_reproduces_acting_log_probs_across_episode_resets() -> None:
    n_envs, n_steps = 4, 2 * EPISODE_LEN + 3  # 15: rollouts cut episodes mid-way
    trainer, env = make_trainer(n_envs, seed=1)
    buffer = RolloutBuffer(n_envs, n_steps, OBS_DIM, ACTION_SPACE)
    carry = trainer.start_carry(*env.reset())
    carry, _ = trainer.collect_rollout(env, buffer, carry)  # the next rollout starts mid-episode
    carry, finished = trainer.collect_rollout(env, buffer, carry)
    assert len(finished) == 3 * n_envs  # second rollout covers steps 15..29: ends after 17, 23, 29
    assert int(buffer.dones.sum()) == 3 * n_envs
    covered = []
    for mb in buffer.minibatches(2, torch.Generator().manual_seed(0)):
        covered.extend(mb.env_indices.tolist())
        assert mb.obs.shape == (2, n_steps, OBS_DIM)
        assert torch.equal(mb.obs, buffer.obs[:, mb.env_indices].transpose(0, 1))
        with torch.no_grad():
            out = trainer.policy.evaluate(mb.obs, mb.initial_state, mb.actions, mb.masks, mb.dones)
            assert torch.allclose(out.log_prob, mb.log_probs, atol=1e-5)
            assert torch.allclose(out.value, mb.values, atol=1e-5)
            # without the resets the replay would diverge after the first episode end
            no_reset = trainer.policy.evaluate(
                mb.obs, mb.initial_state, mb.actions, mb.masks, torch.zeros_like(mb.dones)
            )
            assert not torch.allclose(no_reset.value, mb.values, atol=1e-5)
    assert sorted(covered) == list(range(n_envs))
    assert torch.allclose(buffer.returns, buffer.advantages + buffer.values)


def test_buffer_rejects_misuse() -> None:
    n_envs = 2
    buffer = RolloutBuffer(n_envs, 1, 3, ACTION_SPACE)
    masks = ActionMasks.all_valid(n_envs, ACTION_SPACE)
    step = dict(
        obs=torch.zeros(n_envs, 3),
        actions=torch.zeros(n_envs, 8, dtype=torch.long),
        log_prob=torch.zeros(n_envs),
        value=torch.zeros(n_envs),
        reward_raw=torch.zeros(n_envs),
        reward=torch.zeros(n_envs),
        done=torch.zeros(n_envs, dtype=torch.bool),
        masks=masks,
    )
    with pytest.raises(ValueError, match="call start"):
        buffer.add(**step)
    buffer.start((torch.zeros(1, n_envs, 4), torch.zeros(1, n_envs, 4)))
    with pytest.raises(ValueError, match="expected 1 steps, got 0"):
        buffer.finish(torch.zeros(n_envs), 0.9, 0.9)
    with pytest.raises(ValueError, match="'done' expected dtype"):
        buffer.add(**{**step, "done": torch.zeros(n_envs)})
    with pytest.raises(ValueError, match="'obs' expected shape"):
        buffer.add(**{**step, "obs": torch.zeros(n_envs, 4)})
    buffer.add(**step)
    with pytest.raises(ValueError, match="full"):
        buffer.add(**step)
    with pytest.raises(ValueError, match="call finish"):
        next(buffer.minibatches(1))
    buffer.finish(torch.zeros(n_envs), 0.9, 0.9)
    with pytest.raises(ValueError, match="n_minibatches"):
        next(buffer.minibatches(3))
