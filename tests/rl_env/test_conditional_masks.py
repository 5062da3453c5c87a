"""ActionMasks.alpha_target_by_slot: SET_ALPHA_TARGET samples its target from the chosen slot's row."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.contracts.actions import HEAD_INDEX, ActionSpace, Op
from esper.rl.distributions import ActionMasks, head_mask
from esper.rl.policy import RecurrentActorCritic

SPACE = ActionSpace(3, 2)


def retarget_only(batch: int, rows: list[list[bool]]) -> ActionMasks:
    """Only SET_ALPHA_TARGET on every slot; slot s allows the targets in rows[s]."""
    masks = ActionMasks.all_valid(batch, SPACE)
    masks.op[:] = False
    masks.op[:, Op.SET_ALPHA_TARGET] = True
    by_slot = torch.tensor(rows, dtype=torch.bool).expand(batch, -1, -1).clone()
    plain = torch.zeros(batch, 3, dtype=torch.bool)  # would be empty: must not be used for the retarget
    return ActionMasks(**{**masks.tensors(), "alpha_target": plain, "alpha_target_by_slot": by_slot})


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=3,
                                                  max_size=3).filter(lambda r: all(any(x) for x in r)))
def test_retarget_targets_come_from_the_chosen_slot(seed: int, rows: list[list[bool]]) -> None:
    torch.manual_seed(seed)
    policy = RecurrentActorCritic(4, SPACE, hidden=8, lstm_hidden=8, head_hidden=8)
    batch = 16
    masks = retarget_only(batch, rows)
    masks.validate(SPACE)
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(batch, 4, generator=generator) * 3
    out = policy.act(obs, policy.initial_state(batch), masks, generator=generator)
    for row in out.actions.tolist():
        assert row[HEAD_INDEX["op"]] == Op.SET_ALPHA_TARGET
        assert rows[row[HEAD_INDEX["slot"]]][row[HEAD_INDEX["alpha_target"]]]
    replay = policy.evaluate(
        obs.unsqueeze(1), policy.initial_state(batch), out.actions.unsqueeze(1),
        masks.apply(lambda t: t.unsqueeze(1)), torch.zeros(batch, 1, dtype=torch.bool),
    )
    assert torch.allclose(replay.log_prob.squeeze(1), out.log_prob, atol=1e-5)


def test_a_single_allowed_target_is_forced_and_costs_no_log_prob() -> None:
    torch.manual_seed(0)
    policy = RecurrentActorCritic(4, SPACE, hidden=8, lstm_hidden=8, head_hidden=8)
    rows = [[False, False, True], [False, False, True], [False, False, True]]
    masks = retarget_only(5, rows)
    out = policy.act(torch.randn(5, 4), policy.initial_state(5), masks)
    assert (out.actions[:, HEAD_INDEX["alpha_target"]] == 2).all()
    rows_idx = torch.arange(5)
    chosen = {name: out.actions[:, HEAD_INDEX[name]] for name in ("op", "slot")}
    assert head_mask(masks, "alpha_target", rows_idx, chosen).tolist() == [[False, False, True]] * 5


def test_other_ops_use_the_plain_target_mask() -> None:
    masks = ActionMasks.all_valid(2, SPACE)
    masks.alpha_target[:] = torch.tensor([True, False, False])
    by_slot = torch.zeros(2, 3, 3, dtype=torch.bool)
    by_slot[:, :, 2] = True
    masks = ActionMasks(**{**masks.tensors(), "alpha_target_by_slot": by_slot})
    rows = torch.arange(2)
    germinate = {"op": torch.tensor([Op.GERMINATE, Op.SET_ALPHA_TARGET]), "slot": torch.tensor([1, 1])}
    assert head_mask(masks, "alpha_target", rows, germinate).tolist() == [[True, False, False], [False, False, True]]
    with pytest.raises(ValueError, match=r"needs the choices of \['slot'\]"):
        head_mask(masks, "alpha_target", rows, {"op": germinate["op"]})


def test_default_by_slot_mask_follows_the_plain_mask_and_validate_checks_it() -> None:
    masks = ActionMasks.all_valid(2, SPACE)
    derived = ActionMasks(**{k: v for k, v in masks.tensors().items() if k != "alpha_target_by_slot"})
    assert derived.alpha_target_by_slot.shape == (2, 3, 3)
    derived.alpha_target[0, 1] = False  # a broadcast view: edits of the plain mask show through
    assert not bool(derived.alpha_target_by_slot[0, 2, 1])
    stacked = ActionMasks.stack([derived, derived])
    assert stacked.alpha_target_by_slot.shape == (2, 2, 3, 3)
    broken = ActionMasks.all_valid(1, SPACE)
    broken.alpha_target_by_slot[0, 1] = False
    with pytest.raises(ValueError, match="valid for SET_ALPHA_TARGET but allows no alpha target"):
        broken.validate(SPACE)
    broken.slot_by_op[0, Op.SET_ALPHA_TARGET, 1] = False
    broken.validate(SPACE)  # that slot cannot be retargeted, so its empty row is fine
    wrong = ActionMasks(**{**ActionMasks.all_valid(1, SPACE).tensors(),
                           "alpha_target_by_slot": torch.ones(1, 2, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"alpha_target_by_slot: expected shape \(1, 3, 3\)"):
        wrong.validate(SPACE)
