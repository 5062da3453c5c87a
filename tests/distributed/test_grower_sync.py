"""A hand-written loop's growth step under two real gloo ranks: every rank takes rank 0's decision.

Grower.end_epoch decides through the same growth step as `esper train`
(esper.training.growth_step.decide), so a controller that answers differently
on each rank (its signals come from each rank's own shard) cannot split the ranks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from .configs import free_port

WORLD = 2


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x).mean(dim=-1))


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        from esper.adapters import Grower, attach
        from esper.contracts.actions import Op
        from esper.control import Decision, EpochSignals

        torch.manual_seed(0)
        x = torch.randn(8, 1, 16)
        model = attach(_Net(), slots=["block"], example_input=x)
        slot = model.slot_ids()[0]

        class PerRank:
            """Rank 0 germinates, rank 1 waits: what two ranks with different metrics may answer."""

            name = "per-rank"

            def decide(self, signals: EpochSignals, model: object) -> Decision:
                if rank == 0:
                    return Decision(Op.GERMINATE, slot=slot, blueprint=grower.blueprints[0], reason="rank 0")
                return Decision(Op.WAIT, reason="rank 1")

            def state_dict(self) -> dict[str, object]:
                return {}

            def load_state_dict(self, state: dict[str, object]) -> None:
                return None

        grower = Grower(model, PerRank(), max_epochs=3)
        step = grower.end_epoch(train_loss=1.0, train_accuracy=0.5, val_loss=1.0, val_accuracy=0.5 + 0.1 * rank)
        report = {
            "op": step.decision.op.name,
            "reason": step.decision.reason,
            "executed": step.outcome.executed,
            "stage": step.stages[slot],
            "seeds_changed": step.seeds_changed,
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_every_rank_takes_rank_zeros_decision_in_a_hand_written_loop(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    reports = [json.loads(Path(tmp_path, f"rank{r}.json").read_text(encoding="utf-8")) for r in range(WORLD)]
    expected = {"op": "GERMINATE", "reason": "rank 0", "executed": True, "stage": "GERMINATED", "seeds_changed": True}
    assert reports == [expected, expected]
