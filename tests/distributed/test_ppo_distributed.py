"""Decentralised PPO: 2 gloo ranks x 1 environment update exactly like 1 process x 2 environments
(within floating-point reduction tolerance): normalisers merged, advantages normalised globally,
gradients averaged."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from esper.growth_rl.rank_sync import DecentralisedSync
from esper.rl.buffer import RolloutBuffer
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd
from esper.rl.policy import RecurrentActorCritic
from esper.rl.ppo import PPOConfig, PPOTrainer
from rl.toy_env import ACTION_SPACE, EPISODE_LEN, OBS_DIM, ToyVecEnv

from .configs import free_port

N_STEPS = 2 * EPISODE_LEN
WORLD = 2


def _trainer() -> PPOTrainer:
    torch.manual_seed(5)
    cfg = PPOConfig(n_minibatches=1, update_epochs=2)
    return PPOTrainer(
        RecurrentActorCritic(OBS_DIM, ACTION_SPACE), cfg, RunningMeanStd(OBS_DIM), RewardNormalizer(WORLD, cfg.gamma)
    )


def _env_slice(buffer: RolloutBuffer, env: int) -> RolloutBuffer:
    """The rollout of one environment, as a one-env buffer (what that env's rank collected)."""
    one = copy.deepcopy(buffer)
    one.n_envs = 1
    for name in ("obs", "actions", "log_probs", "values", "rewards_raw", "rewards", "dones", "advantages", "returns"):
        setattr(one, name, getattr(buffer, name)[:, env : env + 1].clone())
    h, c = buffer.initial_state
    one.initial_state = (h[:, env : env + 1].clone(), c[:, env : env + 1].clone())
    one.masks = buffer.masks.apply(lambda t: t[:, env : env + 1].clone())
    return one


def _reference(tmp: Path) -> None:
    trainer = _trainer()
    env = ToyVecEnv(WORLD, seed=3)
    obs, masks = env.reset()
    buffer = RolloutBuffer(WORLD, N_STEPS, OBS_DIM, ACTION_SPACE)
    trainer.collect_rollout(env, buffer, trainer.start_carry(obs, masks), generator=torch.Generator().manual_seed(1))
    before = trainer.state_dict()
    # Raw observations of one more step, to check the normaliser merge on its own.
    raw = torch.randn(WORLD, OBS_DIM, generator=torch.Generator().manual_seed(2)) * 3 + 1
    torch.save({"before": before, "buffer": buffer, "raw": raw}, tmp / "rollout.pt")
    trainer.normalize_obs(raw, update=True)
    trainer.update(buffer, 0)
    torch.save({"policy": trainer.policy.state_dict(), "obs_mean": trainer.obs_normalizer.mean}, tmp / "single.pt")


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        saved = torch.load(Path(tmp) / "rollout.pt", weights_only=False)
        trainer = _trainer()
        trainer.sync = DecentralisedSync()
        trainer.load_state_dict(saved["before"])
        trainer.normalize_obs(saved["raw"][rank : rank + 1], update=True)
        trainer.update(_env_slice(saved["buffer"], rank), 0)
        torch.save(
            {"policy": trainer.policy.state_dict(), "obs_mean": trainer.obs_normalizer.mean},
            Path(tmp) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_ranks_one_env_each_update_like_one_process_with_two(tmp_path: Path) -> None:
    _reference(tmp_path)
    context = mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=False)
    while not context.join(timeout=100):
        pass
    single = torch.load(tmp_path / "single.pt", weights_only=False)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    # Every rank holds the same policy and the normaliser a single process would hold.
    for name, value in single["policy"].items():
        assert torch.equal(ranks[0]["policy"][name], ranks[1]["policy"][name]), name
        torch.testing.assert_close(ranks[0]["policy"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(ranks[0]["obs_mean"], single["obs_mean"], rtol=1e-12, atol=1e-12)
    # The update moved the policy (a test of nothing would pass trivially otherwise).
    before = torch.load(tmp_path / "rollout.pt", weights_only=False)["before"]["policy"]
    assert any(not torch.equal(before[n], single["policy"][n]) for n in before)
