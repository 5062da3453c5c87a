"""Growing under DDP with two real gloo ranks (torch.multiprocessing, no mocks).

Each rank trains on its own shard, so its local metrics differ from the other's; the
lifecycle, the parameters and the gradients must not.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .configs import GROWING, free_port

WORLD = 2


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def write(self, event: Any) -> None:
        self.events.append(event.model_dump(mode="json"))

    def close(self) -> None:
        return None


def _worker(rank: int, port: int, out_dir: str, config_json: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        from esper.distributed.sharding import evaluation_shard
        from esper.training import trainer
        from esper.training.batches import eval_mode, evaluate
        from esper.training.config import TrainConfig
        from esper.training.growth_run import GrowthRun
        from esper.training.run_io import load_run

        runs: list[GrowthRun] = []
        germinated_params: dict[str, str] = {}

        class Recording(GrowthRun):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                runs.append(self)

            def apply(self, decision: Any, controller: str) -> Any:
                outcome = super().apply(decision, controller)
                if decision.op.name == "GERMINATE" and outcome.executed:
                    # Before the next training pass: DDP's rebuild must make these equal across ranks.
                    self.train_epoch_hook_pending = decision.slot
                return outcome

            def _train_pass(self) -> tuple[float, float]:
                result = super()._train_pass()
                pending = getattr(self, "train_epoch_hook_pending", None)
                if pending is not None:
                    slot = self.model.slot(pending)
                    germinated_params["after_first_pass"] = _digest(
                        {n: p for n, p in slot.named_parameters()}
                    )
                    self.train_epoch_hook_pending = None
                return result

        trainer.GrowthRun = Recording  # type: ignore[misc]  # instrumentation only: the run is real
        recorder = _Recorder()
        config = TrainConfig(**json.loads(config_json))
        out = Path(out_dir) / "run"
        summary = trainer.run_training(config, out_dir=out, extra_backends=[recorder])
        run = runs[0]
        model = run.model
        params = _digest(dict(model.state_dict()))
        with eval_mode(model):
            local = evaluate(model, evaluation_shard(run.splits.val), 128, torch.device("cpu"))
        seed_grads = {
            f"{slot.slot_id}.{n}": p.grad
            for slot in model.slots()
            if slot.seed is not None
            for n, p in slot.seed.named_parameters()
            if p.grad is not None
        }
        dist.barrier()  # rank 0 has written the checkpoint
        saved = load_run(out / "checkpoint.pt")
        report = {
            "rank": rank,
            "transitions": [
                (e["epoch"], e["slot"], e["from_stage"], e["to_stage"])
                for e in recorder.events
                if e["type"] == "seed_stage_changed"
            ],
            "gates": [
                (e["epoch"], e["slot"], e["gate"], e["passed"])
                for e in recorder.events
                if e["type"] == "gate_evaluated"
            ],
            "val_accuracy": [e["val_accuracy"] for e in recorder.events if e["type"] == "epoch_metrics"],
            "local_val_accuracy": local.accuracy,
            "params": params,
            "per_key": {k: _digest({k: v}) for k, v in model.state_dict().items()},
            "checkpoint_params": _digest(dict(saved.model.state_dict())),
            "seed_grads": _digest(seed_grads),
            "seed_grad_norm": float(sum(float(g.norm()) for g in seed_grads.values())),
            "germinated_after_first_pass": germinated_params.get("after_first_pass"),
            "ddp_rebuilds": run._ddp.rebuilds if run._ddp is not None else 0,
            "summary_accuracy": summary["test_accuracy"],
            "files": sorted(p.name for p in out.iterdir()),
        }
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_ranks_grow_identically_under_ddp(tmp_path: Path) -> None:
    context = mp.start_processes(
        _worker,
        args=(free_port(), str(tmp_path), json.dumps(GROWING)),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    while not context.join(timeout=150):
        pass
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD))

    # Local metrics disagree: each rank sees its own shard of the validation set.
    assert r0["local_val_accuracy"] != r1["local_val_accuracy"]
    # ... but what decisions read is global, and identical.
    assert r0["val_accuracy"] == r1["val_accuracy"]

    # A germination in the middle of training, then G1 and strict G2: the same on both ranks.
    stages = [t[3] for t in r0["transitions"]]
    assert stages[:3] == ["GERMINATED", "TRAINING", "BLENDING"], r0["transitions"]
    assert r0["transitions"][0][0] >= 1  # not before training started
    assert r0["transitions"] == r1["transitions"]
    assert r0["gates"] == r1["gates"] and r0["gates"]

    # Structure and parameters bitwise identical; the new seed was synchronised and trained
    # with all-reduced gradients (identical on both ranks although their batches differ).
    assert r0["params"] == r1["params"], [k for k in r0["per_key"] if r0["per_key"][k] != r1["per_key"].get(k)]
    assert r0["germinated_after_first_pass"] is not None
    assert r0["germinated_after_first_pass"] == r1["germinated_after_first_pass"]
    assert r0["seed_grads"] == r1["seed_grads"] and r0["seed_grad_norm"] > 0
    assert r0["ddp_rebuilds"] >= 2 and r0["ddp_rebuilds"] == r1["ddp_rebuilds"]

    # Rank 0's checkpoint holds exactly the final model, and loads on either rank.
    assert r0["checkpoint_params"] == r0["params"] == r1["checkpoint_params"]
    assert r0["summary_accuracy"] == r1["summary_accuracy"]
    assert {"checkpoint.pt", "events.jsonl", "summary.json"} <= set(r0["files"])
