"""A run owns its generators: it never reseeds the process, and a checkpoint carries its streams."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from esper.checkpoints.run_state import RngState
from esper.contracts.actions import Op
from esper.control.decision import Decision
from esper.random_stream import GlobalGeneratorTouched, draws_in_forward
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


def test_the_run_stream_draws_the_run_generator_and_leaves_the_callers_alone() -> None:
    generators = RunGenerators(3)
    reference = torch.Generator().manual_seed(3)
    before = torch.get_rng_state()
    with generators.stream():
        first = torch.randn(3)  # what nn.Module initialisers and dropout draw
    with generators.stream():
        second = torch.nn.Linear(2, 2).weight.detach().clone()
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, torch.randn(3, generator=reference))
    # The second block continues the run's stream where the first left it.
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(reference.get_state())
        assert torch.equal(second, torch.nn.Linear(2, 2).weight.detach())


def test_the_cuda_generator_is_made_on_first_use_and_a_restored_state_waits_for_it() -> None:
    generators = RunGenerators(3)
    assert generators.state_dict()["cuda"] is None
    with pytest.raises(ValueError, match="on cpu or cuda only, not on mps"):
        generators.generator_for(torch.device("mps"))
    # A CUDA state from a checkpoint (written on a GPU machine) survives a resume without CUDA.
    state = generators.state_dict()
    state["cuda"] = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)
    generators.load_state(RngState.model_validate(state))
    assert torch.equal(generators.state_dict()["cuda"], state["cuda"])
    state["cuda"] = None
    generators.load_state(RngState.model_validate(state))
    assert generators.state_dict()["cuda"] is None


TEXT_CORPUS = "def grow(model):\n    return model  # a seed starts as the identity\n" * 60


def _config(kind: str, tmp_path: Path) -> TrainConfig:
    """Tiny runs: the CNN host, the CNN host with head dropout, the GPT host with dropout (attention too)."""
    if kind == "cnn":
        return TINY
    if kind == "cnn-dropout":
        return TINY.model_copy(update={"host_overrides": {"dropout": 0.3}})
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT_CORPUS, encoding="utf-8")
    return TrainConfig(
        task="text",
        text_file=str(corpus),
        controller="static",
        epochs=3,
        max_batches_per_epoch=1,
        batch_size=4,
        seed=5,
        host_overrides={"dropout": 0.2, "n_layers": 2, "d_model": 16, "n_heads": 2},
    )


RUNS = {"cnn": "conv_light", "cnn-dropout": "conv_light", "gpt-dropout": "attention"}


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_a_run_leaves_the_process_generators_alone(kind: str, tmp_path: Path) -> None:
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    before = _global_states()
    run = GrowthRun(_config(kind, tmp_path))
    assert draws_in_forward(run.model) == kind.endswith("dropout")
    run.train_epoch()
    slot = run.model.slot_ids()[0]
    assert run.apply(Decision(Op.GERMINATE, slot=slot, blueprint=RUNS[kind], reason="t"), "test").executed
    run.train_epoch()
    run.test()
    run.state_dict()
    assert _same_global_states(_global_states(), before)


def _seed_weights(run: GrowthRun, slot: str) -> list[torch.Tensor]:
    seed = run.model.slot(slot).seed
    assert seed is not None
    return [p.detach().clone() for p in seed.parameters()]


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_interleaved_runs_draw_what_runs_alone_draw(kind: str, tmp_path: Path) -> None:
    config = _config(kind, tmp_path)
    plan_a, plan_b = resolve_plan(config), resolve_plan(config.model_copy(update={"seed": 6}))
    slot = GrowthRun(plan_a).model.slot_ids()[0]
    germinate = Decision(Op.GERMINATE, slot=slot, blueprint=RUNS[kind], reason="t")

    def outcome(run: GrowthRun) -> list[torch.Tensor]:
        losses = torch.tensor(run.history["train_loss"], dtype=torch.float64)
        return [losses, *_seed_weights(run, slot), *(p.detach().clone() for p in run.model.host_parameters())]

    def alone(plan: object) -> list[torch.Tensor]:
        run = GrowthRun(plan)  # type: ignore[arg-type]
        run.train_epoch()
        run.apply(germinate, "test")
        run.train_epoch()
        return outcome(run)

    expected_a, expected_b = alone(plan_a), alone(plan_b)
    run_a, run_b = GrowthRun(plan_a), GrowthRun(plan_b)
    for step in (lambda r: r.train_epoch(), lambda r: r.apply(germinate, "test"), lambda r: r.train_epoch()):
        step(run_a)
        torch.randn(100)  # the caller's own draws do not reach the runs
        step(run_b)
    for run, expected in ((run_a, expected_a), (run_b, expected_b)):
        assert all(torch.equal(x, y) for x, y in zip(outcome(run), expected, strict=True))
    if kind.endswith("dropout"):  # the dropout masks differ between the seeds, so the losses do
        assert not torch.equal(expected_a[0], expected_b[0])


def test_a_step_that_draws_from_the_global_generator_is_named() -> None:
    run = GrowthRun(TINY)
    # A forward that draws outside the stream (no module the run knows draws: no stream in training).
    run.model.register_forward_hook(lambda module, args, output: output + 0 * torch.randn(1))
    with pytest.raises(GlobalGeneratorTouched, match=r"GrowthRun\.train_epoch drew from torch's global"):
        run.train_epoch()


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
