"""On CUDA a run draws dropout masks from its own CUDA generator (skipped where no GPU exists)."""

from __future__ import annotations

import pytest
import torch

from esper.contracts.actions import Op
from esper.control.decision import Decision
from esper.training.config import TrainConfig
from esper.training.growth_run import GrowthRun
from esper.training.plan import resolve_plan

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available to this torch build or machine"),
]

CONFIG = TrainConfig(
    task="mnist1d", controller="static", epochs=3, max_batches_per_epoch=2, seed=5, device="cuda",
    host_overrides={"dropout": 0.3},
)  # fmt: skip


def _steps(run: GrowthRun) -> None:
    run.train_epoch()
    run.apply(Decision(Op.GERMINATE, slot=run.model.slot_ids()[0], blueprint="conv_light", reason="t"), "test")
    run.train_epoch()


def test_a_cuda_run_draws_from_its_own_cuda_generator_and_checkpoints_it() -> None:
    torch.cuda.init()
    before = (torch.get_rng_state(), torch.cuda.get_rng_state_all())
    run = GrowthRun(CONFIG)
    _steps(run)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), before[1], strict=True))
    state = run.state_dict()["rng"]["cuda"]
    assert state is not None and state.dtype == torch.uint8 and tuple(state.shape) == (16,)
    # Two masks drawn per training batch at least: the offset moved from the fresh generator's.
    fresh = torch.Generator(device="cuda").manual_seed(CONFIG.seed).get_state()
    assert not torch.equal(state, fresh)


def test_interleaved_cuda_runs_draw_what_runs_alone_draw() -> None:
    plan_a, plan_b = resolve_plan(CONFIG), resolve_plan(CONFIG.model_copy(update={"seed": 6}))
    alone = []
    for plan in (plan_a, plan_b):
        run = GrowthRun(plan)
        _steps(run)
        alone.append(run.state_dict()["rng"])
    run_a, run_b = GrowthRun(plan_a), GrowthRun(plan_b)
    run_a.train_epoch()
    run_b.train_epoch()
    torch.rand(10, device="cuda")  # the caller's own draws do not reach the runs
    for run in (run_a, run_b):
        run.apply(Decision(Op.GERMINATE, slot=run.model.slot_ids()[0], blueprint="conv_light", reason="t"), "test")
        run.train_epoch()
    for run, expected in ((run_a, alone[0]), (run_b, alone[1])):
        found = run.state_dict()["rng"]
        assert torch.equal(found["cuda"], expected["cuda"]) and torch.equal(found["torch"], expected["torch"])
