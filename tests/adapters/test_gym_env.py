"""esper.growth_rl.GrowthEnv as a gymnasium.Env: check_env, random masked steps, one MaskablePPO update."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

import esper.growth_rl  # noqa: E402  (after the skip)
from esper.contracts.actions import HEADS, Op  # noqa: E402
from esper.growth_rl.environment import GrowthEnv as RunEnv  # noqa: E402
from esper.growth_rl.gym_env import GymGrowthEnv, flat_action_mask  # noqa: E402

# Tiny runs: one training batch per epoch.
TINY = {"max_batches_per_epoch": 1}


@pytest.fixture(scope="module")
def env() -> GymGrowthEnv:
    return esper.growth_rl.GrowthEnv(task="mnist1d", episode_length=4, seed=3, **TINY)


def test_the_issue_spelling_is_a_gymnasium_env(env: GymGrowthEnv) -> None:
    assert isinstance(env, gym.Env) and isinstance(env, GymGrowthEnv)
    assert esper.growth_rl.GymGrowthEnv is GymGrowthEnv
    assert isinstance(env.action_space, gym.spaces.MultiDiscrete)
    assert env.action_space.nvec.tolist() == list(env.space.nvec())
    assert env.observation_space.shape == (len(env.feature_names),)
    # Our own PPO keeps its environment class under its module path.
    assert isinstance(env.run_env, RunEnv)


def test_check_env_passes(env: GymGrowthEnv) -> None:
    from gymnasium.utils.env_checker import check_env

    check_env(env, skip_render_check=True)


def test_masks_are_one_flat_vector_with_a_choice_in_every_head(env: GymGrowthEnv) -> None:
    env.reset(seed=5)
    mask = env.action_masks()
    nvec = env.space.nvec()
    assert mask.dtype == bool and mask.shape == (sum(nvec),)
    for part in np.split(mask, np.cumsum(nvec)[:-1]):
        assert part.any()
    assert mask[Op.WAIT]  # WAIT is always allowed
    assert np.array_equal(mask, flat_action_mask(env.run_env._masks))  # type: ignore[arg-type]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=r"\['epochs'\] are set by the environment"):
        esper.growth_rl.GrowthEnv(task="mnist1d", episode_length=2, epochs=3)
    with pytest.raises(ValueError, match="seed"):
        esper.growth_rl.GrowthEnv(task="mnist1d", seed=-1)
    env = esper.growth_rl.GrowthEnv(task="mnist1d", episode_length=2, seed=0, **TINY)
    with pytest.raises(ValueError, match="call reset"):
        env.step(np.zeros(len(HEADS), dtype=np.int64))
    env.reset()
    with pytest.raises(ValueError, match="8 integer head indices"):
        env.step(np.zeros(3, dtype=np.int64))


@pytest.mark.slow
def test_hundreds_of_random_masked_steps_never_raise() -> None:
    env = esper.growth_rl.GrowthEnv(task="mnist1d", episode_length=5, seed=11, **TINY)
    rng = np.random.default_rng(0)
    nvec = env.space.nvec()
    env.reset(seed=0)
    episodes, refused, executed_ops = 0, 0, set()
    for _ in range(200):
        parts = np.split(env.action_masks(), np.cumsum(nvec)[:-1])
        action = np.array([rng.choice(np.flatnonzero(part)) for part in parts], dtype=np.int64)
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs) and not truncated and math.isfinite(reward)
        assert math.isclose(sum(info["reward_components"].values()), reward, rel_tol=1e-6, abs_tol=1e-9)
        refused += not info["action_admitted"]
        if info["action_admitted"]:
            executed_ops.add(info["op"])
        if terminated:
            episodes += 1
            env.reset()
    assert episodes == 40
    assert {"WAIT", "GERMINATE"} <= executed_ops
    assert refused < 200


def test_one_maskable_ppo_update_runs() -> None:
    sb3 = pytest.importorskip("sb3_contrib")
    env = esper.growth_rl.GrowthEnv(task="mnist1d", episode_length=4, seed=0, **TINY)
    agent = sb3.MaskablePPO("MlpPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu")
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(total_timesteps=8)
    assert agent.num_timesteps == 8
    after = list(agent.policy.parameters())
    assert any(not np.allclose(a.numpy(), b.detach().numpy()) for a, b in zip(before, after, strict=True))


@pytest.mark.slow
def test_a_clear_message_when_gymnasium_is_missing() -> None:
    script = (
        "import sys\n"
        "sys.modules['gymnasium'] = None\n"
        "import esper.growth_rl\n"
        "try:\n"
        "    esper.growth_rl.GrowthEnv\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert "pip install 'esper[gym]'" in done.stdout


def test_flat_mask_is_the_union_over_legal_ops() -> None:
    import torch

    from esper.rl.distributions import ActionMasks

    t, f = True, False
    masks = ActionMasks(
        op=torch.tensor([t, t, f, f, f, t]),  # WAIT, GERMINATE, ADVANCE
        slot_by_op=torch.tensor(
            [[t, t, t], [f, t, f], [f, f, f], [f, f, f], [f, f, f], [t, f, f]]  # GERMINATE r0c1, ADVANCE r0c0
        ),
        blueprint_by_slot=torch.tensor([[f, f], [t, f], [t, t]]),
        style=torch.ones(4, dtype=torch.bool),
        tempo=torch.ones(3, dtype=torch.bool),
        alpha_target=torch.ones(3, dtype=torch.bool),
        alpha_speed=torch.ones(4, dtype=torch.bool),
        alpha_curve=torch.ones(5, dtype=torch.bool),
    )
    flat = flat_action_mask(masks)
    assert flat[:6].tolist() == [t, t, f, f, f, t]
    assert flat[6:9].tolist() == [t, t, f]  # r0c2 is legal only for WAIT, which ignores the slot
    assert flat[9:11].tolist() == [t, f]  # blueprints of the slots GERMINATE may use (r0c1)
    assert flat[11:].all()
