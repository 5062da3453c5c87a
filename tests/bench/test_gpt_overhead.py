"""The GPT host's bench cases: the hand-written static model computes exactly what the grown
model computes, and both suites run at toy size (structure only; no assertion about speed)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from esper.bench.gpt_overhead import (
    FOSSILIZED_BLUEPRINTS,
    StaticGrownGPT,
    gpt_case,
    gpt_dormant_overhead,
    gpt_fossilized_overhead,
    grow_gpt,
)
from esper.bench.model_overhead import DORMANT_GOAL, FOSSILIZED_GOAL
from esper.bench.timing import BenchSettings, TimingPlan
from esper.contracts.stages import SeedStage
from esper.tasks.text import text_task

TINY = BenchSettings(plan=TimingPlan(warmup=1, rounds=3, min_sample_ms=0.0, clock="cpu"), tiny=True)


def _grown() -> tuple[nn.Module, StaticGrownGPT, torch.Tensor]:
    torch.manual_seed(0)
    case = gpt_case(tiny=True)
    host = case.build_host()
    model = grow_gpt(host)
    static = StaticGrownGPT(host, [model.slot(sid).seed for sid in model.slot_ids()])  # type: ignore[misc]
    return model, static, case.input()


def test_every_slot_holds_a_fossilized_seed_of_the_named_blueprint() -> None:
    model, _, _ = _grown()
    slots = [model.slot(sid) for sid in model.slot_ids()]  # type: ignore[operator]
    assert [slot.stage for slot in slots] == [SeedStage.FOSSILIZED] * len(FOSSILIZED_BLUEPRINTS)
    assert [slot.state.blueprint for slot in slots] == list(FOSSILIZED_BLUEPRINTS)


def test_static_gpt_equals_the_grown_model_forward_and_backward() -> None:
    model, static, x = _grown()
    for mode in (True, False):
        model.train(mode)
        static.train(mode)
        ours, plain = model(x), static(x)
        assert torch.equal(ours, plain)
    # The seeds are not the identity: without them the output would differ.
    assert not torch.equal(model.host(x), model(x))  # type: ignore[operator]
    model.train()
    static.train()
    model(x).square().sum().backward()
    static(x).square().sum().backward()
    ours_grads = sorted(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None)
    plain_grads = sorted(float(p.grad.abs().sum()) for p in static.parameters() if p.grad is not None)
    assert len(ours_grads) == len(plain_grads)
    torch.testing.assert_close(ours_grads, plain_grads, rtol=1e-6, atol=1e-9)


def test_static_gpt_owns_copies_of_the_parameters() -> None:
    model, static, x = _grown()
    ours = {id(p) for p in model.parameters()}
    assert not ours & {id(p) for p in static.parameters()}
    # The embedding and output weights stay tied, as in the host.
    assert static.lm_head is static.token_embedding
    before = static(x)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert torch.equal(static(x), before)


def test_static_gpt_refuses_a_seed_it_has_no_hand_written_version_of() -> None:
    host = gpt_case(tiny=True).build_host()
    seeds: list[nn.Module] = [nn.Identity()] * len(host.segments)
    with pytest.raises(ValueError, match="no hand-written version of a Identity seed"):
        StaticGrownGPT(host, seeds)
    with pytest.raises(ValueError, match="expected 4 seeds, got 1"):
        StaticGrownGPT(host, seeds[:1])


def test_the_full_case_is_the_text_task_host() -> None:
    case = gpt_case(tiny=False)
    task = text_task()
    for key, value in task.host_config.items():
        assert case.config[key] == value, key
    assert case.batch == task.defaults.batch_size
    assert "GPT d_model 64, 4 layers" in case.description


@pytest.mark.parametrize(
    ("suite", "name", "goal"),
    [
        (gpt_dormant_overhead, "gpt_dormant_overhead", DORMANT_GOAL),
        (gpt_fossilized_overhead, "gpt_fossilized_overhead", FOSSILIZED_GOAL),
    ],
)
def test_gpt_suites_time_forward_and_forward_backward(suite, name: str, goal: float) -> None:  # type: ignore[no-untyped-def]
    result = suite(TINY)
    assert set(result) == {name}
    metric = result[name]
    assert metric["goal"] == goal and metric["kind"] == "ratio"
    assert set(metric["cases"]) == {"gpt", "gpt_forward"}
    assert "forward+backward" in metric["cases"]["gpt"]["description"]
    assert "forward only" in metric["cases"]["gpt_forward"]["description"]
    assert metric["value"] == max(case["ratio"] for case in metric["cases"].values())
    for case in metric["cases"].values():
        assert case["rounds"] == 3 and case["ours_ms"] > 0 and case["plain_ms"] > 0
