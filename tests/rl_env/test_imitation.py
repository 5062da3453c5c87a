"""Imitation before PPO: decisions encode exactly, the expert drives an env like a real run, cloning learns."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from esper.contracts.actions import ActionSpace, Op
from esper.control.decision import Decision
from esper.control.execute import execute
from esper.control.legality import GrowthLimits
from esper.growth_rl.actions_decode import decode_action
from esper.growth_rl.actions_encode import UnencodableDecision, encode_decision
from esper.growth_rl.environment import EnvConfig, GrowthEnv
from esper.growth_rl.imitation import ImitationConfig, behaviour_clone, collect_demonstrations
from esper.growth_rl.masks import build_masks
from esper.growth_rl.training import PPORunConfig
from esper.growth_rl.vector_env import VectorGrowthEnv
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd
from esper.rl.policy import RecurrentActorCritic
from esper.rl.ppo import PPOConfig, PPOTrainer
from esper.telemetry import events as ev
from esper.training.config import TrainConfig
from esper.training.trainer import run_training

from .test_masks_exact import BLUEPRINTS, candidates, check_exact, perturb_measurements, pick_move, tiny_model

# A heuristic that germinates at once and judges quickly, so short episodes exercise every op.
EAGER = {
    "min_epoch_to_germinate": 1,
    "min_epochs_left_to_germinate": 4,
    "plateau_epochs": 1,
    "stable_epochs": 1,
    "stable_rel_improvement": 10.0,
    "stable_rise_tolerance": 10.0,
    "plateau_min_gain_points": 100.0,
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), permissive=st.booleans(), epochs=st.integers(2, 18))
def test_encoding_a_decoded_admitted_action_gives_back_the_same_decision(
    seed: int, permissive: bool, epochs: int
) -> None:
    rng = np.random.default_rng(seed)
    model = tiny_model(permissive)
    limits = GrowthLimits(max_seeds=3, max_added_params=5000)
    slot_ids = model.slot_ids()
    accuracy = 0.3
    for _ in range(epochs):
        accuracy = float(np.clip(accuracy + rng.normal(0.01, 0.02), 0.0, 1.0))
        perturb_measurements(model, rng, accuracy)
        masks = build_masks(model, BLUEPRINTS, limits)
        for action in check_exact(model, limits, rng):
            decision = decode_action(action, slot_ids, BLUEPRINTS)
            encoded = encode_decision(decision, slot_ids, BLUEPRINTS, masks)  # raises if not admitted
            assert decode_action(encoded, slot_ids, BLUEPRINTS) == decision
        chosen = pick_move(rng, check_exact(model, limits, rng))
        assert execute(model, decode_action(chosen, slot_ids, BLUEPRINTS), BLUEPRINTS, limits).executed
        model.step_epoch()


def test_decisions_the_action_space_cannot_express_are_refused_by_name() -> None:
    model = tiny_model(permissive=True)
    limits = GrowthLimits(max_seeds=3, max_added_params=5000)
    masks = build_masks(model, BLUEPRINTS, limits)
    slots = model.slot_ids()
    with pytest.raises(UnencodableDecision, match="blend_steps 4 is not one of the action choices"):
        odd_tempo = Decision(Op.GERMINATE, slot=slots[0], blueprint="norm", blend_steps=4)
        encode_decision(odd_tempo, slots, BLUEPRINTS, masks)
    with pytest.raises(UnencodableDecision, match="op ADVANCE is not allowed"):
        encode_decision(Decision(Op.ADVANCE, slot=slots[0]), slots, BLUEPRINTS, masks)
    with pytest.raises(UnencodableDecision, match="slot 'r9c9'"):
        encode_decision(Decision(Op.GERMINATE, slot="r9c9", blueprint="norm"), slots, BLUEPRINTS, masks)
    assert any(True for _ in candidates(np.random.default_rng(0), len(slots)))


@pytest.mark.parametrize("seed", [0, 1])
def test_an_env_driven_by_the_expert_reproduces_the_experts_own_training_run(seed: int) -> None:
    """Same seed, same config: `esper train --controller heuristic` and the expert-driven env agree exactly."""
    epochs = 16
    train = TrainConfig(task="mnist1d-blind", max_batches_per_epoch=3, heuristic=EAGER)
    with tempfile.TemporaryDirectory() as out:
        summary = run_training(
            train.model_copy(update={"epochs": epochs, "seed": seed, "controller": "heuristic"}),
            out_dir=Path(out),
        )
    env = GrowthEnv(EnvConfig(train=train, episode_length=epochs, shapley=False))
    env.reset(seed)
    ops, done, info = [], False, {}
    while not done:
        action = env.expert_action("heuristic")
        ops.append(Op(action.op))
        _, _, done, info, _ = env.step(action)
    assert info["final_val_accuracy"] == summary["val_accuracy"]
    assert {Op.GERMINATE, Op.ADVANCE} <= set(ops) and ({Op.FOSSILIZE, Op.PRUNE} & set(ops)), ops


def small_trainer(obs_dim: int, space: ActionSpace, envs: int) -> PPOTrainer:
    torch.manual_seed(0)
    policy = RecurrentActorCritic(obs_dim, space, hidden=32, lstm_hidden=32, head_hidden=16)
    config = PPOConfig(n_minibatches=1)
    return PPOTrainer(policy, config, RunningMeanStd(obs_dim), RewardNormalizer(envs, config.gamma))


def test_cloning_raises_the_probability_of_the_experts_actions() -> None:
    train = TrainConfig(task="mnist1d-blind", max_batches_per_epoch=1, heuristic=EAGER)
    config = EnvConfig(train=train, episode_length=6)
    imitation = ImitationConfig(expert="heuristic", rounds=2, passes=1, lr=3e-3)
    events: list[ev.TelemetryEvent] = []
    with VectorGrowthEnv([config, config], 0, base_seed=5, emit=events.append) as vec:
        vec.reset()
        assert vec.layout is not None
        trainer = small_trainer(vec.layout.dim, ActionSpace(len(vec.layout.slot_ids), len(vec.layout.blueprints)), 2)
        buffers, episodes = collect_demonstrations(trainer, vec, imitation, config.episode_length)
    assert len(buffers) == 2 and len(episodes) == 4
    assert events == [], "demonstrations are muted"
    assert trainer.obs_normalizer is not None and trainer.obs_normalizer.count > 0  # PPO inherits the statistics
    ops = torch.cat([b.actions[..., 0].flatten() for b in buffers])
    assert (ops != int(Op.WAIT)).any(), "the eager expert must act in these episodes"
    first = behaviour_clone(trainer, buffers, imitation)
    emitted: list[ev.TelemetryEvent] = []
    later = behaviour_clone(
        trainer, buffers, imitation.model_copy(update={"passes": 30}), emit=emitted.append, context={"x": 1.0}
    )
    assert later["expert_prob"] > first["expert_prob"] + 0.2
    assert later["decision_prob"] > first["decision_prob"]
    assert later["bc_loss"] < first["bc_loss"]
    assert [e.pass_index for e in emitted] == list(range(30))  # type: ignore[attr-defined]
    assert all(e.metrics["x"] == 1.0 for e in emitted)  # type: ignore[attr-defined]


def test_imitation_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="expected one of"):
        PPORunConfig.model_validate({"imitation": {"expert": "oracle"}})
    with pytest.raises(ValidationError, match="rounds"):
        PPORunConfig.model_validate({"imitation": {"rounds": -1}})
    with pytest.raises(ValidationError, match=r"unknown_key|extra"):
        PPORunConfig.model_validate({"imitation": {"unknown_key": 1}})
    with pytest.raises(ValueError, match="no demonstrations"):
        behaviour_clone(small_trainer(4, ActionSpace(2, 2), 1), [], ImitationConfig())
