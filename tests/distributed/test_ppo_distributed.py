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
from esper.rl.distributions import ActionMasks
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd
from esper.rl.policy import ActResult, LSTMState, RecurrentActorCritic
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


# ---------------------------------------------------------------- rollouts
# Each environment's actions are drawn from its own generator, one row at a time, so 2 ranks x 1 env
# act exactly as 1 process x 2 envs and the rollouts' data (and the normalisers fed from it) must match.
CONTEXTS = [0, 2]
ROLLOUTS = 2


def _per_env_sampling(trainer: PPOTrainer, envs: list[int]) -> PPOTrainer:
    act = trainer.policy.act
    generators = [torch.Generator().manual_seed(100 + env) for env in envs]

    def rowwise(obs: torch.Tensor, state: LSTMState, masks: ActionMasks, generator: object = None) -> ActResult:
        rows = [
            act(obs[k : k + 1], (state[0][:, k : k + 1], state[1][:, k : k + 1]), masks.index(slice(k, k + 1)),
                generator=generators[k])
            for k in range(obs.shape[0])
        ]  # fmt: skip
        return ActResult(
            torch.cat([r.actions for r in rows]),
            torch.cat([r.log_prob for r in rows]),
            torch.cat([r.value for r in rows]),
            (torch.cat([r.state[0] for r in rows], dim=1), torch.cat([r.state[1] for r in rows], dim=1)),
            {name: torch.cat([r.head_entropy[name] for r in rows]) for name in rows[0].head_entropy},
        )

    trainer.policy.act = rowwise  # type: ignore[method-assign]
    return trainer


def _rollouts(trainer: PPOTrainer, env: ToyVecEnv) -> list[RolloutBuffer]:
    obs, masks = env.reset()
    carry = trainer.start_carry(obs, masks)
    buffers = []
    for _ in range(ROLLOUTS):
        buffer = RolloutBuffer(env.n_envs, N_STEPS, OBS_DIM, ACTION_SPACE)
        carry, _ = trainer.collect_rollout(env, buffer, carry)
        buffers.append(buffer)
    return buffers


def _saved(trainer: PPOTrainer, buffers: list[RolloutBuffer]) -> dict[str, object]:
    obs_norm, reward_norm = trainer.obs_normalizer, trainer.reward_normalizer
    assert obs_norm is not None and reward_norm is not None
    return {
        "obs_mean": obs_norm.mean, "obs_var": obs_norm.var, "obs_count": obs_norm.count,
        "reward_state": reward_norm.state_dict(),
        "obs": [b.obs for b in buffers], "actions": [b.actions for b in buffers],
        "rewards": [b.rewards for b in buffers], "dones": [b.dones for b in buffers],
    }  # fmt: skip


def _rollout_worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        trainer = _per_env_sampling(_trainer(), [rank])
        trainer.sync = DecentralisedSync()
        calls = {"all_gather": 0, "all_reduce": 0}
        for name in calls:
            original = getattr(dist, name)

            def counted(*args: object, _name: str = name, _original: object = original, **kwargs: object) -> object:
                calls[_name] += 1
                return _original(*args, **kwargs)  # type: ignore[operator]

            setattr(dist, name, counted)
        buffers = _rollouts(trainer, ToyVecEnv(1, contexts=[CONTEXTS[rank]]))
        gathers = calls["all_gather"]
        metrics = trainer.update(buffers[-1], 0)
        saved = _saved(trainer, buffers)
        saved.update(gathers=gathers, all_reduces=calls["all_reduce"], metrics=metrics)
        torch.save(saved, Path(tmp) / f"rollout{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_ranks_collect_the_rollouts_of_one_process_with_one_exchange_per_step(tmp_path: Path) -> None:
    single = _per_env_sampling(_trainer(), list(range(WORLD)))
    reference = _saved(single, _rollouts(single, ToyVecEnv(WORLD, contexts=CONTEXTS)))
    context = mp.start_processes(_rollout_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=False)
    while not context.join(timeout=100):
        pass
    ranks = [torch.load(tmp_path / f"rollout{r}.pt", weights_only=False) for r in range(WORLD)]
    for rank, saved in enumerate(ranks):
        # Normalisers fed by every rank's data equal the single process's, bit for bit.
        assert torch.equal(saved["obs_mean"], reference["obs_mean"])
        assert torch.equal(saved["obs_var"], reference["obs_var"])
        assert saved["obs_count"] == reference["obs_count"] == ROLLOUTS * N_STEPS
        for key, value in reference["reward_state"].items():
            assert torch.equal(torch.as_tensor(saved["reward_state"][key]), torch.as_tensor(value)), key
        # Each rank's buffers are its env's column of the single process's.
        for name in ("obs", "actions", "rewards", "dones"):
            for mine, whole in zip(saved[name], reference[name], strict=True):
                assert torch.equal(mine[:, 0], whole[:, rank]), name
        # One all-gather per environment step, and one more for the first rollout's first observations.
        assert saved["gathers"] == ROLLOUTS * N_STEPS + 1
        # Two all-reduces per minibatch step (statistics, gradients); a KL stop skips the gradients.
        metrics = saved["metrics"]
        assert saved["all_reduces"] == 2 * metrics["minibatch_steps"] + metrics["kl_stopped"]
    # The rollouts were not trivial: the rewards vary and an episode ended inside them.
    assert torch.cat(reference["rewards"]).unique().numel() > 1 and bool(reference["dones"][0].any())
