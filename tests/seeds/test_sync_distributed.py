"""The distributed sync point: rank 0's gate decision is every rank's decision (real gloo group)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from esper.contracts import SlotShape
from esper.contracts.gates import GateLevel, GateResult
from esper.contracts.stages import SeedStage
from esper.seeds import LifecycleError, SeedSlot
from esper.seeds.sync import distributed_active, sync_decision

WORLD = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _slot_in_training(rank: int, projected_points: float) -> SeedSlot:
    """A TRAINING slot whose only difference between ranks is the measured projected gain."""
    torch.manual_seed(0)
    slot = SeedSlot("r0c0", SlotShape("cnn", 8, spatial_dims=1))  # strict gates
    slot.germinate("conv_light", blend_steps=3)
    slot.record_accuracy(0.5)
    assert slot.advance().passed  # G1 (itself a synchronised decision)
    for _ in range(3):
        slot.step_epoch()
    slot.record_projected_contribution(projected_points)
    assert slot.state is not None
    slot.state.metrics.gradient_ratio = 0.5
    return slot


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    report: dict[str, object] = {"rank": rank, "active": distributed_active()}
    try:
        # Case 1: rank 0 sees +5 pt (G2 passes), rank 1 sees +0 pt (G2 would fail locally).
        slot = _slot_in_training(rank, projected_points=5.0 if rank == 0 else 0.0)
        assert slot.state is not None
        gain = slot.state.metrics.projected_contribution
        report["local_g2_would_pass"] = gain is not None and gain >= slot.gate_config.g2_min_improvement_points
        result = slot.advance()
        report["case1"] = {"passed": result.passed, "stage": slot.stage.name, "failed": list(result.checks_failed)}

        # Case 2: the reverse; rank 0 fails, so rank 1 (which would pass) stays too.
        slot = _slot_in_training(rank, projected_points=0.0 if rank == 0 else 5.0)
        before = slot.state.model_dump()  # type: ignore[union-attr]
        result = slot.advance()
        report["case2"] = {
            "passed": result.passed,
            "stage": slot.stage.name,
            "unchanged": slot.state.model_dump() == before,  # type: ignore[union-attr]
        }

        # force_alpha would let ranks evaluate different networks: refused inside the group.
        blending = _slot_in_training(rank, projected_points=5.0)
        blending.advance()
        try:
            with blending.force_alpha(0.0):
                report["force_alpha"] = "allowed"
        except LifecycleError as error:
            report["force_alpha"] = str(error)

        # The sync point itself, with a per-rank value.
        mine = GateResult(GateLevel.G2, rank == 0, float(rank), ("rank",), (), f"rank {rank}")
        report["synced"] = sync_decision(mine).to_dict()
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))


def test_every_rank_takes_rank_zeros_decision(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    reports = [json.loads(Path(tmp_path, f"rank{r}.json").read_text()) for r in range(WORLD)]
    for report in reports:
        assert report["active"] is True
        # Case 1: rank 0 passes, so both move to BLENDING (rank 1 would not have on its own).
        assert report["case1"] == {"passed": True, "stage": "BLENDING", "failed": []}
        # Case 2: rank 0 fails, so neither moves, and a refused advance changes nothing.
        assert report["case2"] == {"passed": False, "stage": "TRAINING", "unchanged": True}
        assert "not allowed under torch.distributed" in report["force_alpha"]
        assert report["synced"]["message"] == "rank 0" and report["synced"]["passed"] is True
    assert reports[0]["local_g2_would_pass"] is True and reports[1]["local_g2_would_pass"] is False


def test_sync_decision_is_the_identity_without_a_group() -> None:
    assert not dist.is_initialized()
    assert not distributed_active()
    decision = GateResult(GateLevel.G3, False, 0.5, ("a",), ("b",), "m")
    assert sync_decision(decision) is decision
    marker = object()
    assert sync_decision(marker) is marker


def test_force_alpha_allowed_without_a_group() -> None:
    slot = _slot_in_training(0, projected_points=5.0)
    assert slot.advance().passed and slot.stage == SeedStage.BLENDING
    with slot.force_alpha(0.0):
        assert slot.alpha.forced and slot.alpha.tensor(torch.zeros(1)).item() == 0.0
    assert not slot.alpha.forced
