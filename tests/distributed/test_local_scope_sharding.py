"""A rank's own runs (a PPO environment's host model, inside `local_scope`) take all the data, as on
one process; the same rank's DDP work outside the scope takes its shard. Two real gloo ranks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from esper.distributed.group import local_scope
from esper.distributed.sharding import evaluation_shard, sharded_epoch_batches

from .configs import free_port

WORLD = 2
DATA = TensorDataset(torch.arange(12.0).reshape(12, 1), torch.arange(12))


def _views() -> dict[str, object]:
    batches = sharded_epoch_batches(DATA, 4, seed=3, epoch=1, max_batches=None, device=torch.device("cpu"))
    return {"eval": evaluation_shard(DATA).tensors[1].tolist(), "train": [y.tolist() for _, y in batches]}


def _worker(rank: int, port: int, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        shard = _views()
        with local_scope():
            own = _views()
        torch.save({"shard": shard, "own": own}, Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_local_scope_takes_all_the_data_and_ddp_work_its_shard(tmp_path: Path) -> None:
    context = mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=False)
    while not context.join(timeout=100):
        pass
    whole = _views()  # one process
    assert whole["eval"] == list(range(12)) and len(whole["train"]) == 3
    for rank in range(WORLD):
        saved = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert saved["own"] == whole  # e.g. a PPO environment's counterfactual measurement: the whole set
        assert saved["shard"]["eval"] == list(range(rank, 12, WORLD))
        assert [batch for batch in saved["shard"]["train"]] == [b[rank::WORLD] for b in whole["train"]]
