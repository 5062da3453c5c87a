"""SeedAlpha: one holder of a seed's alpha for the slot's whole life."""

from __future__ import annotations

import pytest
import torch

from esper.contracts.alpha import AlphaCurve
from esper.contracts.stages import SeedStage
from esper.seeds.alpha import BlendPlan, SeedAlpha
from esper.seeds.alpha_controller import AlphaControllerError

from .test_slot_lifecycle import FAST, X, fast_slot, new_slot, perturb

S = SeedStage


def test_the_slot_keeps_one_alpha_through_a_whole_life() -> None:
    slot = new_slot(FAST)
    holder = slot.alpha
    assert isinstance(holder, SeedAlpha) and holder.blend is None
    slot.germinate("conv_light", blend_steps=2, alpha_target=0.7)
    assert slot.alpha.blend == BlendPlan(target=0.7, steps=2)
    assert slot.advance().passed and slot.advance().passed  # TRAINING, then BLENDING
    assert slot.alpha.mode.name == "UP" and slot.alpha.target == 0.7
    slot.step_epoch()
    slot.prune("test", steps=2)
    slot.step_epoch()
    slot.step_epoch()
    assert slot.stage == S.PRUNED and slot.alpha.alpha == 0.0
    assert slot.alpha.blend == BlendPlan(target=0.7, steps=2)  # the pruned seed's record keeps its plan
    while slot.stage != S.DORMANT:
        slot.step_epoch()
    assert slot.alpha.blend is None
    slot.germinate("noop")
    assert slot.alpha is holder


def test_retarget_changes_the_plan_and_the_ramp_together() -> None:
    slot = fast_slot(S.HOLDING)
    slot.set_alpha_target(0.5, steps=2, curve=AlphaCurve.COSINE)
    assert slot.stage == S.BLENDING
    assert slot.alpha.blend is not None and slot.alpha.blend.target == 0.5
    assert slot.alpha.target == 0.5 and slot.alpha.curve is AlphaCurve.COSINE


def test_the_forward_tensor_follows_alpha_without_invalidation() -> None:
    slot = fast_slot(S.BLENDING, blend_steps=4)
    perturb(slot)
    seen = []
    while True:
        tensor = slot.alpha.tensor(X)
        assert tensor.item() == slot.alpha.alpha and tensor.dtype == X.dtype
        assert slot.alpha.tensor(X) is tensor  # cached while alpha stays
        seen.append(tensor.item())
        if slot.alpha.at_target:
            break
        slot.step_epoch()
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert slot.alpha.tensor(X.double()).dtype == torch.float64


def test_forcing_holds_a_value_only_inside_its_block() -> None:
    alpha = SeedAlpha()
    alpha.retarget(0.5, 0)
    with alpha.forcing(0.0):
        assert alpha.forced and alpha.tensor(X).item() == 0.0
        assert alpha.alpha == 0.5  # the seed's own alpha is untouched
    assert not alpha.forced and alpha.tensor(X).item() == 0.5
    per_sample = torch.tensor([0.0, 1.0, 0.5])
    with alpha.forcing(per_sample):
        assert alpha.tensor(X) is per_sample
    with pytest.raises(RuntimeError, match="boom"), alpha.forcing(1.0):
        raise RuntimeError("boom")
    assert not alpha.forced


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, r"in \[0, 1\]"),
        (True, r"in \[0, 1\]"),
        (torch.tensor([[0.5]]), "0-dim or"),
        (torch.tensor([1]), "floating"),
    ],
)
def test_forcing_refuses_bad_values_before_the_block(value: object, message: str) -> None:
    alpha = SeedAlpha()
    with pytest.raises(AlphaControllerError, match=message):
        alpha.forcing(value)  # type: ignore[arg-type]
    assert not alpha.forced


def test_forcing_does_not_nest() -> None:
    alpha = SeedAlpha()
    with alpha.forcing(0.0), pytest.raises(AlphaControllerError, match="does not nest"):
        alpha.forcing(1.0)
    assert not alpha.forced


def test_a_checkpoint_keeps_the_plan_where_it_always_was() -> None:
    slot = fast_slot(S.TRAINING, blend_steps=3)
    record = slot.lifecycle_state()["seed_state"]
    assert list(record) == [
        "blueprint", "alpha_algorithm", "stage", "previous_stage", "blend_steps", "alpha_target",
        "history", "metrics", "prune_reason",
    ]
    assert (record["blend_steps"], record["alpha_target"]) == (3, 1.0)
    restored = new_slot(FAST)
    restored.restore_lifecycle(slot.lifecycle_state())
    assert restored.alpha.blend == BlendPlan(target=1.0, steps=3)
    assert restored.lifecycle_state() == slot.lifecycle_state()
