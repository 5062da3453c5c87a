"""Action contract, masked categorical, conditional masks and head credit."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.contracts.actions import (
    ALPHA_CURVE_CHOICES,
    ALPHA_SPEEDS,
    ALPHA_TARGETS,
    BLEND_STYLE_ALPHA,
    HEAD_CREDIT,
    HEAD_INDEX,
    HEADS,
    TEMPO_EPOCHS,
    ActionSpace,
    BlendStyle,
    FactoredAction,
    Op,
    credit_mask,
)
from esper.contracts.alpha import AlphaAlgorithm, AlphaCurve
from esper.rl.distributions import PLAIN_MASK_HEADS, ActionMasks, MaskedCategorical
from esper.rl.policy import RecurrentActorCritic

from .toy_env import single_thread


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


# ---- contract -----------------------------------------------------------------


def test_action_contract_values() -> None:
    assert [int(o) for o in Op] == [0, 1, 2, 3, 4, 5]
    assert [o.name for o in Op] == ["WAIT", "GERMINATE", "SET_ALPHA_TARGET", "PRUNE", "FOSSILIZE", "ADVANCE"]
    assert HEADS == (
        "op",
        "slot",
        "blueprint",
        "style",
        "tempo",
        "alpha_target",
        "alpha_speed",
        "alpha_curve",
    )
    assert TEMPO_EPOCHS == (3, 5, 8)
    assert ALPHA_TARGETS == (0.5, 0.7, 1.0)
    assert ALPHA_SPEEDS == (0, 3, 5, 8)
    assert ALPHA_CURVE_CHOICES == (
        (AlphaCurve.LINEAR, 0.0),
        (AlphaCurve.COSINE, 0.0),
        (AlphaCurve.SIGMOID, 6.0),
        (AlphaCurve.SIGMOID, 12.0),
        (AlphaCurve.SIGMOID, 24.0),
    )
    assert BLEND_STYLE_ALPHA[BlendStyle.LINEAR_MULTIPLY] == (AlphaCurve.LINEAR, AlphaAlgorithm.MULTIPLY)
    assert BLEND_STYLE_ALPHA[BlendStyle.SIGMOID_ADD] == (AlphaCurve.SIGMOID, AlphaAlgorithm.ADD)
    assert BLEND_STYLE_ALPHA[BlendStyle.GATED_GATE] == (AlphaCurve.LINEAR, AlphaAlgorithm.GATE)


def test_action_space_sizes_and_credit() -> None:
    space = ActionSpace(n_slots=3, n_blueprints=7)
    assert space.nvec() == (6, 3, 7, 4, 3, 3, 4, 5)
    assert space.head_sizes()["blueprint"] == 7
    assert credit_mask(Op.WAIT) == (True,) + (False,) * 7
    assert credit_mask(Op.PRUNE) == (True, True, False, False, False, False, True, True)
    assert credit_mask(Op.GERMINATE) == (True, True, True, True, True, True, False, False)
    assert HEAD_CREDIT[Op.FOSSILIZE] == HEAD_CREDIT[Op.ADVANCE] == frozenset({"op", "slot"})
    with pytest.raises(ValueError, match="n_slots"):
        ActionSpace(0, 3)
    with pytest.raises(ValueError, match="op"):
        credit_mask(9)


def test_factored_action_round_trip_and_validation() -> None:
    action = FactoredAction.from_indices([1, 0, 2, 3, 2, 1, 0, 4])
    assert action.to_dict() == {
        "op": 1,
        "slot": 0,
        "blueprint": 2,
        "style": 3,
        "tempo": 2,
        "alpha_target": 1,
        "alpha_speed": 0,
        "alpha_curve": 4,
    }
    assert action.op_enum is Op.GERMINATE
    assert action.tempo_epochs == 8
    assert action.alpha_target_value == 0.7
    assert action.alpha_curve_choice == (AlphaCurve.SIGMOID, 24.0)
    assert action.blend_style is BlendStyle.GATED_GATE
    action.validate(ActionSpace(1, 3))
    with pytest.raises(ValueError, match="blueprint"):
        action.validate(ActionSpace(1, 2))
    with pytest.raises(ValueError, match="style"):
        FactoredAction(0, 0, 0, -1, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="op"):
        FactoredAction(6, 0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="expected 8 indices"):
        FactoredAction.from_indices([0, 0])


# ---- masked categorical ------------------------------------------------------------


def test_masked_categorical_rejects_bad_masks() -> None:
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"torch\.bool"):
        MaskedCategorical(logits, torch.ones(2, 3))
    with pytest.raises(ValueError, match="shape"):
        MaskedCategorical(logits, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"rows \[\[1\]\] have no valid choice"):
        MaskedCategorical(logits, torch.tensor([[True, False, False], [False, False, False]]))


def test_masked_categorical_probabilities_entropy_and_log_prob() -> None:
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.5], [1.0, 1.0, 1.0, 1.0], [5.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, False, True, True], [True, True, False, False], [False, True, False, False]])
    dist = MaskedCategorical(logits, mask)
    assert torch.all(dist.probs[~mask] == 0.0)
    reference = torch.distributions.Categorical(logits=torch.tensor([0.3, 2.0, 0.5]))
    assert torch.allclose(dist.log_prob(torch.tensor([2, 0, 1]))[0], reference.log_prob(torch.tensor(1)))
    assert torch.allclose(dist.entropy()[0], reference.entropy())
    # two equal valid logits: entropy log 2, normalised 1; a single valid choice: 0 and 0
    assert math.isclose(dist.entropy()[1].item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(dist.normalized_entropy()[1].item(), 1.0, rel_tol=1e-6)
    assert dist.entropy()[2].item() == 0.0
    assert dist.normalized_entropy()[2].item() == 0.0
    assert dist.mode().tolist() == [2, 0, 1]


def test_masked_categorical_has_finite_gradients_when_mostly_masked() -> None:
    logits = torch.tensor([[30.0, -40.0, 7.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[False, False, True, False]])
    dist = MaskedCategorical(logits, mask)
    (dist.log_prob(torch.tensor([2])) + dist.entropy() + dist.normalized_entropy()).sum().backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()


def test_masked_categorical_never_samples_masked() -> None:
    generator = torch.Generator().manual_seed(3)
    mask = torch.tensor([[False, True, False, True, False]]).expand(2000, 5)
    samples = MaskedCategorical(torch.randn(2000, 5, generator=generator), mask).sample(generator)
    assert set(samples.tolist()) == {1, 3}


# ---- conditional masks through the policy ------------------------------------------------


def random_masks(batch: int, space: ActionSpace, generator: torch.Generator, density: float) -> ActionMasks:
    """Random masks made exact: an op is valid only if it can be carried out."""
    sizes = space.head_sizes()

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(batch, *shape, generator=generator) < density

    slot_by_op = draw(sizes["op"], sizes["slot"])
    blueprint_by_slot = draw(sizes["slot"], sizes["blueprint"])
    slot_by_op[:, Op.GERMINATE] &= blueprint_by_slot.any(dim=-1)
    op = draw(sizes["op"]) & slot_by_op.any(dim=-1)
    op[:, Op.WAIT] |= ~op.any(dim=-1)
    plain = {}
    for name in PLAIN_MASK_HEADS:
        mask = draw(sizes[name])
        forced = torch.randint(sizes[name], (batch,), generator=generator)
        mask[torch.arange(batch), forced] = True
        plain[name] = mask
    return ActionMasks(op=op, slot_by_op=slot_by_op, blueprint_by_slot=blueprint_by_slot, **plain)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_slots=st.integers(1, 4),
    n_blueprints=st.integers(1, 4),
    batch=st.integers(1, 6),
    density=st.floats(0.1, 0.9),
)
def test_sampled_actions_respect_all_masks(
    seed: int, n_slots: int, n_blueprints: int, batch: int, density: float
) -> None:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    space = ActionSpace(n_slots, n_blueprints)
    policy = RecurrentActorCritic(5, space, hidden=16, lstm_hidden=16, head_hidden=8)
    masks = random_masks(batch, space, generator, density)
    masks.validate(space)
    obs = torch.randn(batch, 5, generator=generator) * 3
    for _ in range(4):
        out = policy.act(obs, policy.initial_state(batch), masks, generator=generator)
        for b in range(batch):
            op, slot, blueprint = (int(out.actions[b, HEAD_INDEX[h]]) for h in ("op", "slot", "blueprint"))
            assert masks.op[b, op]
            slot_row = masks.slot_by_op[b, op]
            # a slot is always drawn from the op's slots when that op allows any
            assert slot_row[slot] or not slot_row.any()
            if "slot" in HEAD_CREDIT[Op(op)]:
                assert slot_row[slot]
            bp_row = masks.blueprint_by_slot[b, slot]
            assert bp_row[blueprint] or not bp_row.any()
            for name in PLAIN_MASK_HEADS:
                assert getattr(masks, name)[b, int(out.actions[b, HEAD_INDEX[name]])]
        # replaying the same step scores the same actions identically
        replay = policy.evaluate(
            obs.unsqueeze(1),
            policy.initial_state(batch),
            out.actions.unsqueeze(1),
            masks.apply(lambda t: t.unsqueeze(1)),
            torch.zeros(batch, 1, dtype=torch.bool),
        )
        assert torch.allclose(replay.log_prob.squeeze(1), out.log_prob, atol=1e-5)


def test_deterministic_act_is_repeatable_and_masked() -> None:
    torch.manual_seed(0)
    space = ActionSpace(2, 3)
    policy = RecurrentActorCritic(4, space, hidden=8, lstm_hidden=8, head_hidden=8)
    masks = ActionMasks.all_valid(3, space)
    masks.op[:, Op.WAIT] = False
    obs = torch.randn(3, 4)
    first = policy.act(obs, policy.initial_state(3), masks, deterministic=True)
    second = policy.act(obs, policy.initial_state(3), masks, deterministic=True)
    assert torch.equal(first.actions, second.actions)
    assert (first.actions[:, 0] != Op.WAIT).all()


def test_action_masks_validate_rejects_inexact_masks() -> None:
    space = ActionSpace(2, 3)
    masks = ActionMasks.all_valid(2, space)
    masks.validate(space)
    orphan = ActionMasks.all_valid(2, space)
    orphan.slot_by_op[1, Op.ADVANCE] = False
    with pytest.raises(ValueError, match="ADVANCE is valid in some rows with no valid slot"):
        orphan.validate(space)
    no_blueprint = ActionMasks.all_valid(2, space)
    no_blueprint.blueprint_by_slot[0, 1] = False
    with pytest.raises(ValueError, match="GERMINATE but allows no blueprint"):
        no_blueprint.validate(space)
    with pytest.raises(ValueError, match=r"ActionMasks.slot_by_op: expected shape \(2, 6, 3\)"):
        masks.validate(ActionSpace(3, 3))
    with pytest.raises(ValueError, match=r"torch\.bool"):
        masks.apply(lambda t: t.float()).validate(space)
    # an empty style mask is fine where no op needing a style is valid
    only_wait = ActionMasks.all_valid(1, space)
    only_wait.op[:] = False
    only_wait.op[:, Op.WAIT] = True
    only_wait.style[:] = False
    only_wait.validate(space)
    only_wait.op[:, Op.GERMINATE] = True
    with pytest.raises(ValueError, match=r"ActionMasks\.style"):
        only_wait.validate(space)


def test_action_masks_stack_index_cat() -> None:
    space = ActionSpace(2, 3)
    a, b = ActionMasks.all_valid(4, space), ActionMasks.all_valid(4, space)
    b.op[:, 2] = False
    stacked = ActionMasks.stack([a, b], dim=0)
    assert tuple(stacked.batch_shape) == (2, 4)
    assert tuple(stacked.slot_by_op.shape) == (2, 4, 6, 2)
    assert torch.equal(stacked.index(1).op, b.op)
    assert tuple(stacked.flatten_batch().blueprint_by_slot.shape) == (8, 2, 3)
    assert tuple(ActionMasks.cat([a, b]).batch_shape) == (8,)
    with pytest.raises(ValueError, match="at least one"):
        ActionMasks.stack([])


# ---- credit ----------------------------------------------------------------------------


def _head_grad_norms(policy: RecurrentActorCritic) -> dict[str, float]:
    norms = {}
    for name in HEADS:
        grads = [p.grad for p in policy.actor_heads[name].parameters()]
        norms[name] = sum(0.0 if g is None else float(g.abs().sum()) for g in grads)
    return norms


@pytest.mark.parametrize("op", list(Op))
def test_uncredited_heads_get_zero_gradient(op: Op) -> None:
    torch.manual_seed(1)
    space = ActionSpace(2, 3)
    policy = RecurrentActorCritic(4, space, hidden=8, lstm_hidden=8, head_hidden=8)
    batch, steps = 3, 2
    masks = ActionMasks.all_valid(batch * steps, space).apply(lambda t: t.reshape(batch, steps, *t.shape[1:]))
    actions = torch.ones(batch, steps, len(HEADS), dtype=torch.long)
    actions[..., 0] = int(op)
    out = policy.evaluate(
        torch.randn(batch, steps, 4),
        policy.initial_state(batch),
        actions,
        masks,
        torch.zeros(batch, steps, dtype=torch.bool),
    )
    (out.log_prob.sum() + out.entropy.sum()).backward()
    norms = _head_grad_norms(policy)
    for name in HEADS:
        if name in HEAD_CREDIT[op]:
            assert norms[name] > 0.0, name
            assert not torch.all(out.head_log_probs[name] == 0.0)
        else:
            assert norms[name] == 0.0, name
            assert torch.all(out.head_log_probs[name] == 0.0)
