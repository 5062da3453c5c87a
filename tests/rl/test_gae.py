"""GAE against hand-computed values and a brute-force sum over each episode's future."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.rl.gae import compute_gae


def test_hand_computed_with_done_in_the_middle() -> None:
    # gamma = lam = 0.5; one env; the episode ends after step 1.
    # t=2: delta = 3 + 0.5*2.0 - 1.5 = 2.5,            A2 = 2.5
    # t=1: delta = 2 + 0 (done) - 1.0 = 1.0,           A1 = 1.0 (no bootstrap past the done)
    # t=0: delta = 1 + 0.5*1.0 - 0.5 = 1.0,            A0 = 1.0 + 0.25*A1 = 1.25
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    dones = torch.tensor([[False], [True], [False]])
    advantages, returns = compute_gae(rewards, values, dones, torch.tensor([2.0]), gamma=0.5, lam=0.5)
    assert advantages.squeeze(1).tolist() == [1.25, 1.0, 2.5]
    assert returns.squeeze(1).tolist() == [1.75, 2.0, 4.0]


def test_done_on_last_step_ignores_last_value() -> None:
    rewards = torch.tensor([[1.0, 1.0]])
    values = torch.tensor([[0.0, 0.0]])
    dones = torch.tensor([[True, False]])
    advantages, _ = compute_gae(rewards, values, dones, torch.tensor([100.0, 100.0]), gamma=0.9, lam=0.8)
    assert advantages[0, 0].item() == 1.0
    assert advantages[0, 1].item() == pytest.approx(1.0 + 0.9 * 100.0)


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="values shape"):
        compute_gae(
            torch.zeros(3, 2),
            torch.zeros(3, 1),
            torch.zeros(3, 2, dtype=torch.bool),
            torch.zeros(2),
            0.9,
            0.9,
        )
    with pytest.raises(ValueError, match="last_value"):
        compute_gae(
            torch.zeros(3, 2),
            torch.zeros(3, 2),
            torch.zeros(3, 2, dtype=torch.bool),
            torch.zeros(3),
            0.9,
            0.9,
        )
    with pytest.raises(ValueError, match="gamma"):
        compute_gae(
            torch.zeros(3, 2),
            torch.zeros(3, 2),
            torch.zeros(3, 2, dtype=torch.bool),
            torch.zeros(2),
            1.5,
            0.9,
        )


def brute_force_advantage(rewards, values, dones, last_value, gamma, lam, t, env) -> float:
    """A_t = sum_k (gamma*lam)^k delta_{t+k}, summed until the episode (or the rollout) ends."""
    n_steps = len(rewards)
    total, weight, k = 0.0, 1.0, t
    while k < n_steps:
        if dones[k][env]:
            next_value = 0.0
        elif k + 1 < n_steps:
            next_value = values[k + 1][env]
        else:
            next_value = last_value[env]
        total += weight * (rewards[k][env] + gamma * next_value - values[k][env])
        if dones[k][env]:
            break
        weight *= gamma * lam
        k += 1
    return total


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n_steps=st.integers(1, 7),
    n_envs=st.integers(1, 3),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
)
def test_matches_brute_force(
    data: st.DataObject, n_steps: int, n_envs: int, gamma: float, lam: float
) -> None:
    number = st.floats(-10.0, 10.0, allow_nan=False, width=32)
    rewards = data.draw(
        st.lists(st.lists(number, min_size=n_envs, max_size=n_envs), min_size=n_steps, max_size=n_steps)
    )
    values = data.draw(
        st.lists(st.lists(number, min_size=n_envs, max_size=n_envs), min_size=n_steps, max_size=n_steps)
    )
    dones = data.draw(
        st.lists(
            st.lists(st.booleans(), min_size=n_envs, max_size=n_envs), min_size=n_steps, max_size=n_steps
        )
    )
    last_value = data.draw(st.lists(number, min_size=n_envs, max_size=n_envs))
    advantages, returns = compute_gae(
        torch.tensor(rewards, dtype=torch.float64),
        torch.tensor(values, dtype=torch.float64),
        torch.tensor(dones),
        torch.tensor(last_value, dtype=torch.float64),
        gamma,
        lam,
    )
    for t in range(n_steps):
        for env in range(n_envs):
            expected = brute_force_advantage(rewards, values, dones, last_value, gamma, lam, t, env)
            assert advantages[t, env].item() == pytest.approx(expected, abs=1e-9, rel=1e-9)
            assert returns[t, env].item() == pytest.approx(expected + values[t][env], abs=1e-9, rel=1e-9)
