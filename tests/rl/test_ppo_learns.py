"""PPO learns the toy lifecycle task; config, annealing, KL stop and resume are exact."""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Iterator

import pydantic
import pytest
import torch

from esper.rl.buffer import RolloutBuffer
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd
from esper.rl.policy import RecurrentActorCritic
from esper.rl.ppo import PPOConfig, PPOTrainer, RolloutCarry

from .toy_env import (
    ACTION_SPACE,
    EPISODE_LEN,
    N_BLUEPRINTS,
    OBS_DIM,
    ToyVecEnv,
    optimal_return,
    single_thread,
)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


N_ENVS = 8
N_STEPS = 2 * EPISODE_LEN
MAX_ROUNDS = 40
EVAL_EVERY = 5


def build(seed: int, n_envs: int = N_ENVS, **config: object) -> tuple[PPOTrainer, ToyVecEnv, RolloutBuffer]:
    torch.manual_seed(seed)
    cfg = PPOConfig(**config)
    trainer = PPOTrainer(
        RecurrentActorCritic(OBS_DIM, ACTION_SPACE),
        cfg,
        RunningMeanStd(OBS_DIM),
        RewardNormalizer(n_envs, cfg.gamma),
    )
    return trainer, ToyVecEnv(n_envs, seed=seed), RolloutBuffer(n_envs, N_STEPS, OBS_DIM, ACTION_SPACE)


def evaluate(trainer: PPOTrainer) -> float:
    """Mean return of deterministic episodes, one per context (good blueprint)."""
    contexts = list(range(N_BLUEPRINTS))
    env = ToyVecEnv(len(contexts), contexts=contexts)
    obs, masks = env.reset()
    state = trainer.policy.initial_state(len(contexts))
    total = torch.zeros(len(contexts))
    for _ in range(EPISODE_LEN):
        out = trainer.policy.act(trainer.normalize_obs(obs, update=False), state, masks, deterministic=True)
        obs, reward, done, masks = env.step(out.actions)
        total += reward
        state = trainer.policy.reset_state(out.state, done)
    assert bool(done.all())
    return total.mean().item()


def test_optimal_return_is_six_in_every_context() -> None:
    assert [optimal_return(c) for c in range(N_BLUEPRINTS)] == [6.0, 6.0, 6.0]


def test_ppo_reaches_90_percent_of_optimal_return() -> None:
    target = 0.9 * optimal_return(0)
    trainer, env, buffer = build(seed=0)
    trainer.obs_normalizer.update(env.reset()[0])
    before = evaluate(trainer)
    assert before < target  # the untrained policy does not already solve it
    carry = trainer.start_carry(*env.reset())
    start = time.perf_counter()
    score, rounds = before, 0
    for round_index in range(MAX_ROUNDS):
        carry, _ = trainer.collect_rollout(env, buffer, carry)
        metrics = trainer.update(buffer, round_index)
        assert all(v == v for k, v in metrics.items() if k != "explained_variance")  # no NaN
        rounds = round_index + 1
        if rounds % EVAL_EVERY == 0:
            score = evaluate(trainer)
            if score >= target:
                break
    elapsed = time.perf_counter() - start
    print(f"toy PPO: return {score:.2f} / {target / 0.9:.1f} after {rounds} updates in {elapsed:.1f}s")
    assert score >= target, f"mean deterministic return {score} < {target} after {rounds} updates"


def test_config_defaults_are_the_reference_values() -> None:
    cfg = PPOConfig()
    assert (cfg.lr, cfg.adam_eps, cfg.clip, cfg.gamma, cfg.gae_lambda) == (3e-4, 1e-5, 0.2, 0.995, 0.98)
    assert (cfg.value_coef, cfg.clip_value, cfg.max_grad_norm, cfg.target_kl) == (0.5, True, 1.0, 0.015)
    assert (cfg.entropy_coef, cfg.entropy_coef_min, cfg.update_epochs, cfg.n_minibatches) == (
        0.05,
        0.01,
        4,
        2,
    )
    assert cfg.normalize_advantages is True
    with pytest.raises(pydantic.ValidationError, match="extra"):
        PPOConfig(learning_rate=1e-3)
    with pytest.raises(pydantic.ValidationError, match="lr"):
        PPOConfig(lr="0.1")


def test_entropy_coefficient_anneals_linearly_to_its_floor() -> None:
    trainer, _, _ = build(seed=0, entropy_anneal_rounds=10)
    assert trainer.entropy_coef(0) == pytest.approx(0.05)
    assert trainer.entropy_coef(5) == pytest.approx(0.03)
    assert trainer.entropy_coef(10) == pytest.approx(0.01)
    assert trainer.entropy_coef(1000) == pytest.approx(0.01)


def test_kl_early_stop_cuts_the_epoch_loop() -> None:
    results = {}
    for target_kl in (1e-7, None):
        trainer, env, buffer = build(seed=2, n_envs=4, lr=3e-2, target_kl=target_kl)
        trainer.collect_rollout(env, buffer, trainer.start_carry(*env.reset()))
        results[target_kl] = trainer.update(buffer, 0)
    stopped, free = results[1e-7], results[None]
    assert stopped["kl_stopped"] == 1.0
    assert stopped["minibatch_steps"] < free["minibatch_steps"] == 4 * 2
    assert stopped["approx_kl"] > 0.0
    assert free["epochs_run"] == 4.0 and free["kl_stopped"] == 0.0


def _round(trainer: PPOTrainer, env: ToyVecEnv, buffer: RolloutBuffer, carry: RolloutCarry, index: int):
    generator = torch.Generator().manual_seed(100 + index)
    carry, _ = trainer.collect_rollout(env, buffer, carry, generator=generator)
    return carry, trainer.update(buffer, index)


def test_resume_from_weights_only_state_continues_bit_for_bit() -> None:
    trainer, env, buffer = build(seed=3, n_envs=4)
    carry = trainer.start_carry(*env.reset())
    for index in range(2):
        carry, _ = _round(trainer, env, buffer, carry, index)
    blob = io.BytesIO()
    torch.save(trainer.state_dict(), blob)
    env_copy, carry_copy = copy.deepcopy(env), copy.deepcopy(carry)
    saved_mean = trainer.obs_normalizer.mean.clone()
    _, expected = _round(trainer, env, buffer, carry, 2)

    blob.seek(0)
    resumed, _, buffer2 = build(seed=99, n_envs=4)  # different initial weights, overwritten by the load
    resumed.load_state_dict(torch.load(blob, weights_only=True))
    assert resumed.updates == 2
    assert torch.equal(resumed.obs_normalizer.mean, saved_mean)  # the normalisers came back too
    assert resumed.obs_normalizer.count == 2 * N_STEPS
    _, got = _round(resumed, env_copy, buffer2, carry_copy, 2)
    assert got == expected
    for (name, a), b in zip(
        trainer.policy.state_dict().items(), resumed.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert torch.equal(trainer.obs_normalizer.var, resumed.obs_normalizer.var)
    assert torch.equal(trainer.reward_normalizer.returns, resumed.reward_normalizer.returns)


def test_load_state_dict_is_strict() -> None:
    trainer, _, _ = build(seed=0, n_envs=2)
    state = trainer.state_dict()
    missing = dict(state)
    del missing["optimizer"]
    with pytest.raises(ValueError, match=r"missing keys \['optimizer'\]"):
        trainer.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unknown keys \['extra'\]"):
        trainer.load_state_dict({**state, "extra": 0})
    other, _, _ = build(seed=0, n_envs=2, lr=1e-3)
    with pytest.raises(ValueError, match=r"'config' differs .* \['lr'\]"):
        other.load_state_dict(state)
    bare = PPOTrainer(RecurrentActorCritic(OBS_DIM, ACTION_SPACE), PPOConfig())
    with pytest.raises(
        ValueError, match="'obs_normalizer' is present in the state but this trainer has none"
    ):
        bare.load_state_dict(state)
    small = PPOTrainer(RecurrentActorCritic(OBS_DIM, ACTION_SPACE, hidden=16), PPOConfig())
    with pytest.raises(ValueError, match="'architecture'"):
        small.load_state_dict(state)


def test_load_state_dict_checks_policy_and_optimizer_before_loading_either() -> None:
    trainer, _, _ = build(seed=0, n_envs=2)
    state = trainer.state_dict()
    target, _, _ = build(seed=1, n_envs=2)
    before = {k: v.clone() for k, v in target.policy.state_dict().items()}
    with pytest.raises(ValueError, match="'optimizer' expected a dict, got list"):
        target.load_state_dict({**state, "optimizer": []})
    with pytest.raises(ValueError, match="'policy' expected a dict, got str"):
        target.load_state_dict({**state, "policy": "weights"})
    # Nothing was loaded: the policy still has its own weights.
    for name, value in target.policy.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_architecture_rebuilds_the_same_network() -> None:
    policy = RecurrentActorCritic(OBS_DIM, ACTION_SPACE, hidden=32, lstm_hidden=24, head_hidden=8)
    arch = policy.architecture()
    rebuilt = RecurrentActorCritic.from_architecture(arch)
    assert rebuilt.architecture() == arch
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in policy.state_dict().items()
    }
    with pytest.raises(ValueError, match="head_sizes"):
        RecurrentActorCritic.from_architecture({**arch, "head_sizes": {"op": 6}})
