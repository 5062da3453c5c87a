"""A run owns its generators: it never reseeds the process, and a checkpoint carries its streams."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from esper.contracts.actions import Op
from esper.control.decision import Decision
from esper.training.config import TrainConfig
from esper.training.generators import RunGenerators
from esper.training.growth_run import GrowthRun
from esper.training.plan import resolve_plan

TINY = TrainConfig(task="mnist1d", controller="static", epochs=3, max_batches_per_epoch=1, seed=5)


def _global_states() -> tuple[object, ...]:
    return (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())


def _same_global_states(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1])
def test_the_run_streams_are_those_of_a_process_seeded_with_the_run_seed(seed: int) -> None:
    generators = RunGenerators(seed)
    with torch.random.fork_rng(devices=[]):
        random_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            expected = (random.random(), np.random.rand(), torch.randn(4))
        finally:
            random.setstate(random_state)
            np.random.set_state(numpy_state)
    assert generators.python.random() == expected[0]
    assert generators.numpy.rand() == expected[1]
    assert torch.equal(torch.randn(4, generator=generators.torch), expected[2])


def test_torch_default_lends_the_run_stream_and_gives_the_caller_its_own_back() -> None:
    generators = RunGenerators(3)
    reference = torch.Generator().manual_seed(3)
    before = torch.get_rng_state()
    with generators.torch_default():
        first = torch.randn(3)  # what nn.Module initialisers and dropout draw
    assert torch.equal(torch.get_rng_state(), before)
    with generators.torch_default():
        second = torch.nn.Linear(2, 2).weight.detach().clone()
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, torch.randn(3, generator=reference))
    # The second block continues the run's stream where the first left it.
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(reference.get_state())
        assert torch.equal(second, torch.nn.Linear(2, 2).weight.detach())


def test_nested_blocks_draw_one_stream() -> None:
    generators, reference = RunGenerators(3), torch.Generator().manual_seed(3)
    with generators.torch_default():
        first = torch.randn(2)
        with generators.torch_default():
            second = torch.randn(2)
        third = torch.randn(2)
    expected = [torch.randn(2, generator=reference) for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip((first, second, third), expected, strict=True))


def test_a_run_leaves_the_process_generators_alone() -> None:
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    before = _global_states()
    run = GrowthRun(TINY)
    run.train_epoch()
    slot = run.model.slot_ids()[0]
    assert run.apply(Decision(Op.GERMINATE, slot=slot, blueprint="conv_light", reason="t"), "test").executed
    run.train_epoch()
    run.state_dict()
    assert _same_global_states(_global_states(), before)


def _seed_weights(run: GrowthRun, slot: str) -> list[torch.Tensor]:
    seed = run.model.slot(slot).seed
    assert seed is not None
    return [p.detach().clone() for p in seed.parameters()]


def test_interleaved_runs_draw_what_runs_alone_draw() -> None:
    plan_a, plan_b = resolve_plan(TINY), resolve_plan(TINY.model_copy(update={"seed": 6}))
    germinate = Decision(Op.GERMINATE, slot="r0c0", blueprint="conv_light", reason="t")

    def alone(plan: object) -> list[torch.Tensor]:
        run = GrowthRun(plan)  # type: ignore[arg-type]
        run.train_epoch()
        run.apply(germinate, "test")
        run.train_epoch()
        return [*_seed_weights(run, "r0c0"), *(p.detach().clone() for p in run.model.host_parameters())]

    expected_a, expected_b = alone(plan_a), alone(plan_b)
    run_a, run_b = GrowthRun(plan_a), GrowthRun(plan_b)
    for step in (lambda r: r.train_epoch(), lambda r: r.apply(germinate, "test"), lambda r: r.train_epoch()):
        step(run_a)
        torch.randn(100)  # the caller's own draws do not reach the runs
        step(run_b)
    for run, expected in ((run_a, expected_a), (run_b, expected_b)):
        found = [*_seed_weights(run, "r0c0"), *(p.detach() for p in run.model.host_parameters())]
        assert all(torch.equal(x, y) for x, y in zip(found, expected, strict=True))


def test_a_resumed_run_continues_the_saved_streams() -> None:
    """A seed germinated after a resume gets the weights it gets in the uninterrupted run."""
    plan = resolve_plan(TINY)
    run = GrowthRun(plan)
    run.train_epoch()
    run.generators.python.random()
    run.generators.numpy.rand()
    saved_model, saved_state = copy.deepcopy(run.model), copy.deepcopy(run.state_dict())
    germinate = Decision(Op.GERMINATE, slot="r0c1", blueprint="conv_light", reason="t")
    run.apply(germinate, "test")
    expected = (_seed_weights(run, "r0c1"), run.generators.python.random(), run.generators.numpy.rand())

    resumed = GrowthRun(plan, model=saved_model, splits=run.splits)
    fresh = RunGenerators(plan.seed).state_dict()
    assert not torch.equal(resumed.generators.state_dict()["torch"], saved_state["rng"]["torch"])
    assert torch.equal(resumed.generators.state_dict()["torch"], fresh["torch"])
    resumed.load_state_dict(saved_state)
    resumed.apply(germinate, "test")
    found = (_seed_weights(resumed, "r0c1"), resumed.generators.python.random(), resumed.generators.numpy.rand())
    assert all(torch.equal(x, y) for x, y in zip(found[0], expected[0], strict=True))
    assert found[1:] == expected[1:]
