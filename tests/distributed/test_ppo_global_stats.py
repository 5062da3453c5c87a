"""A distributed PPO round's statistics are global: two gloo ranks holding different halves of
the data report what one process holding all of it reports (losses, explained variance,
action counts, behaviour-cloning means, gathered episodes), and one process is unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from esper.growth_rl import ppo_run
from esper.rl.ppo import explained_variance

from .configs import free_port

WORLD = 2
N_OPS = 5


def _data() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    returns = torch.randn(6, 4, generator=generator) * 2 + 1  # (steps, envs): 2 envs per rank
    values = returns + torch.randn(6, 4, generator=generator) * torch.tensor([0.1, 0.2, 1.5, 3.0])
    ops = torch.randint(0, N_OPS, (6, 4), generator=generator)
    losses = torch.tensor([[0.5, 2.0, 1.0], [1.5, 4.0, 0.25]])  # per rank: policy, value, entropy
    return {"returns": returns, "values": values, "ops": ops, "losses": losses}


def _local(data: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    envs = slice(2 * rank, 2 * rank + 2)
    return {
        "returns": data["returns"][:, envs],
        "values": data["values"][:, envs],
        "ops": data["ops"][:, envs],
        "losses": data["losses"][rank],
    }


def _metrics(losses: torch.Tensor) -> dict[str, float]:
    policy, value, entropy = (float(v) for v in losses)
    # approx_kl and grad_norm are identical on every rank in a real update.
    return {"policy_loss": policy, "value_loss": value, "entropy": entropy, "approx_kl": 0.03, "grad_norm": 0.7}


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        mine = _local(_data(), rank)
        local_metrics = _metrics(mine["losses"])
        update = ppo_run.global_update_metrics(local_metrics, mine["values"], mine["returns"])
        counts = ppo_run.global_counts(torch.bincount(mine["ops"].flatten(), minlength=N_OPS).double())
        means = ppo_run.global_means({"bc_loss": float(mine["losses"][0]), "expert_prob": 0.5 + rank / 4})
        returns, episodes = ppo_run.gather_round([10.0 * rank], [{"env": rank}])
        torch.save(
            {
                "update": update,
                "local_ev": explained_variance(mine["values"], mine["returns"]),
                "counts": counts,
                "means": means,
                "returns": returns,
                "episodes": episodes,
            },
            Path(tmp) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_round_statistics_are_global_over_the_ranks(tmp_path: Path) -> None:
    context = mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=False)
    while not context.join(timeout=100):
        pass
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    data = _data()
    # Every rank reports the same numbers.
    assert ranks[0]["update"] == ranks[1]["update"]
    assert torch.equal(ranks[0]["counts"], ranks[1]["counts"])
    assert ranks[0]["means"] == ranks[1]["means"]
    update = ranks[0]["update"]
    # Per-sample means of equal shares: the mean of the ranks' means.
    assert update["policy_loss"] == pytest.approx(1.0)
    assert update["value_loss"] == pytest.approx(3.0)
    assert update["entropy"] == pytest.approx(0.625)
    assert update["approx_kl"] == 0.03 and update["grad_norm"] == 0.7
    # Explained variance over all four environments, as one process would compute it, which
    # differs from either rank's own (the ranks' value errors differ).
    whole = explained_variance(data["values"], data["returns"])
    assert update["explained_variance"] == pytest.approx(whole, rel=1e-5)  # float64 moments vs float32
    assert all(abs(r["local_ev"] - whole) > 0.05 for r in ranks)
    # Action counts of every environment's steps.
    assert torch.equal(ranks[0]["counts"], torch.bincount(data["ops"].flatten(), minlength=N_OPS).double())
    assert ranks[0]["means"] == {"bc_loss": pytest.approx(1.0), "expert_prob": pytest.approx(0.625)}
    assert ranks[0]["returns"] == [0.0, 10.0]
    assert ranks[0]["episodes"] == [{"env": 0}, {"env": 1}]


def test_one_process_gets_its_inputs_back() -> None:
    data = _data()
    metrics = _metrics(data["losses"][0])
    update = ppo_run.global_update_metrics(metrics, data["values"], data["returns"])
    assert update is metrics  # untouched: a single process's numbers stay bit-identical
    counts = torch.tensor([1.0, 2.0])
    assert ppo_run.global_counts(counts) is counts
    assert ppo_run.global_means(metrics) is metrics
    assert ppo_run.explained_variance_sums(data["values"], data["returns"]) == explained_variance(
        data["values"], data["returns"]
    )
