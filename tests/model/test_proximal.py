"""The proximal term: recorded only inside `recording_proximal`, never kept past it."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from esper.contracts.stages import SeedStage
from esper.model import MorphogeneticModel
from esper.seeds import LifecycleError

from .test_model import FAST, cnn_host, cnn_input, perturb, to_stage


def training_model(*slot_ids: str) -> MorphogeneticModel:
    model = MorphogeneticModel(cnn_host(), gates=FAST)
    for slot_id in slot_ids:
        to_stage(model, slot_id, SeedStage.TRAINING)
        perturb(model, slot_id)  # off the identity, so the term is not 0
    return model.train()


def by_hand(model: MorphogeneticModel, x: Tensor, slot_ids: list[str]) -> Tensor:
    """Each TRAINING seed's mean squared output change on its own input, summed in slot order."""
    terms = []
    h = model.host.stem(x)
    for segment, slot in model._chain:
        h = segment(h)
        if slot is not None:
            if slot.slot_id in slot_ids:
                assert slot.seed is not None
                seed_in = h.detach()
                terms.append((slot.seed(seed_in) - seed_in).pow(2).mean())
            h = slot(h)
    return torch.stack(terms).sum()


def test_penalty_is_the_seeds_mean_squared_output_change() -> None:
    model = training_model("r0c0", "r0c2")
    x = cnn_input()
    with model.recording_proximal() as proximal:
        model(x)
    penalty = proximal.penalty()
    assert penalty is not None and penalty.item() > 0.0
    assert torch.equal(penalty, by_hand(model, x, ["r0c0", "r0c2"]))


def test_penalty_trains_only_the_seed() -> None:
    model = training_model("r0c1")
    with model.recording_proximal() as proximal:
        model(cnn_input())
    penalty = proximal.penalty()
    assert penalty is not None
    penalty.backward()
    assert all(p.grad is None for p in model.host_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.slot("r0c1").seed_parameters())


def test_nothing_is_recorded_outside_a_recording() -> None:
    model = training_model("r0c0")
    x = cnn_input()
    model(x)  # a training forward nobody asked a penalty of leaves nothing behind
    with model.recording_proximal() as proximal:
        pass
    assert proximal.penalty() is None
    assert all(slot._proximal is None for slot in model.slots())


def test_eval_forwards_and_seeds_outside_training_add_nothing() -> None:
    model = training_model("r0c0")
    with model.recording_proximal() as proximal:
        model.eval()(cnn_input())
    assert proximal.penalty() is None
    blended = MorphogeneticModel(cnn_host(), gates=FAST)
    to_stage(blended, "r0c0", SeedStage.BLENDING)
    with blended.train().recording_proximal() as proximal:
        blended(cnn_input())
    assert proximal.penalty() is None


def test_every_forward_in_a_recording_counts() -> None:
    model = training_model("r0c0")
    x = cnn_input()
    with model.recording_proximal() as once:
        model(x)
    with model.recording_proximal() as twice:
        model(x)
        model(x)
    one, two = once.penalty(), twice.penalty()
    assert one is not None and two is not None
    assert torch.equal(two, torch.stack([one, one]).sum())


def test_recording_does_not_nest_and_closes_on_error() -> None:
    model = training_model("r0c0")
    with model.recording_proximal(), pytest.raises(LifecycleError, match="does not nest"), model.recording_proximal():
        pass
    with pytest.raises(RuntimeError, match="boom"), model.recording_proximal():
        raise RuntimeError("boom")
    assert all(slot._proximal is None for slot in model.slots())
