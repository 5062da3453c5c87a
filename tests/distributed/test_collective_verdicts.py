"""Gate verdicts and force_alpha under two real gloo ranks whose local measurements disagree."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .configs import free_port

WORLD = 2


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        from esper.contracts.actions import Op
        from esper.control.decision import Decision
        from esper.control.execute import execute
        from esper.control.legality import GrowthLimits
        from esper.distributed.measurement import collective_measurement
        from esper.hosts.cnn import CNNHost, CNNHostConfig
        from esper.model import MorphogeneticModel
        from esper.seeds import LifecycleError
        from esper.seeds.gates import GateConfig

        torch.manual_seed(0)
        host = CNNHost(CNNHostConfig(in_channels=1, num_classes=3, widths=[4, 4, 8], spatial_dims=1))
        model = MorphogeneticModel(host, gates=GateConfig(permissive=False, g2_min_epochs=1))
        limits = GrowthLimits(max_seeds=2, max_added_params=10**6)
        slot_id = model.slot_ids()[0]
        slot = model.slot(slot_id)
        report: dict[str, object] = {}
        assert execute(model, Decision(Op.GERMINATE, slot_id, "conv_light"), ["conv_light"], limits).executed
        slot.record_accuracy(0.5)
        assert execute(model, Decision(Op.ADVANCE, slot_id), ["conv_light"], limits).executed  # G1
        slot.step_epoch()
        slot.step_epoch()
        assert slot.state is not None
        slot.state.metrics.gradient_ratio = 0.5
        # Rank 1 measured a gain that passes strict G2 on its own; rank 0 did not. Rank 0's verdict rules.
        slot.record_projected_contribution(5.0 if rank == 1 else 0.0)
        outcome = execute(model, Decision(Op.ADVANCE, slot_id), ["conv_light"], limits)
        report["first"] = [outcome.executed, slot.stage.name]
        # Now the reverse: rank 0 passes, rank 1 would refuse locally; both advance.
        slot.record_projected_contribution(5.0 if rank == 0 else 0.0)
        outcome = execute(model, Decision(Op.ADVANCE, slot_id), ["conv_light"], limits)
        report["second"] = [outcome.executed, slot.stage.name]
        # A collective after both: no rank is left waiting in a different one.
        box = [rank]
        dist.broadcast_object_list(box, src=0)
        report["after"] = box[0]

        x = torch.zeros(2, 1, 8)
        try:
            with slot.force_alpha(0.0):
                pass
            report["force_outside"] = "allowed"
        except LifecycleError as error:
            report["force_outside"] = str(error)
        model.eval()
        with collective_measurement(), torch.no_grad(), slot.force_alpha(0.0):
            model(x)
        report["force_inside"] = "allowed"
        Path(out, f"rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_gate_verdicts_are_rank_zeros_and_force_alpha_only_in_a_collective_measurement(tmp_path: Path) -> None:
    context = mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=False)
    while not context.join(timeout=100):
        pass
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD))
    assert r0["first"] == r1["first"] == [False, "TRAINING"]
    assert r0["second"] == r1["second"] == [True, "BLENDING"]
    assert r0["after"] == r1["after"] == 0
    for report in (r0, r1):
        assert "not allowed under torch.distributed outside a collective measurement" in report["force_outside"]
        assert report["force_inside"] == "allowed"
