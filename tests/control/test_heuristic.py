"""The heuristic controller on scripted signal/metric sequences, executed on a tiny real model."""

from __future__ import annotations

import io

import pytest
import torch
from pydantic import ValidationError

from esper.contracts.actions import Op
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.stages import SeedStage, seed_runs_in_forward
from esper.control import (
    Decision,
    EpochSignals,
    GrowthLimits,
    HeuristicConfig,
    HeuristicController,
    execute,
)
from esper.control.heuristic import host_stabilised, plateau_length
from esper.hosts import CNNHost, CNNHostConfig
from esper.model import MorphogeneticModel

ROTATION = ["conv_light", "conv_heavy", "attention", "norm", "depthwise"]
LIMITS = GrowthLimits(max_seeds=4, max_added_params=100_000)


def tiny_model() -> MorphogeneticModel:
    torch.manual_seed(0)
    host = CNNHost(CNNHostConfig(in_channels=1, num_classes=3, widths=[4, 8], spatial_dims=1))
    return MorphogeneticModel(host)  # slots r0c0 (4 channels), r0c1 (8 channels)


class Run:
    """A scripted training loop: record metrics, decide, execute (must succeed), tick."""

    def __init__(self, controller: HeuristicController, blueprints: list[str] = ROTATION,
                 limits: GrowthLimits = LIMITS) -> None:
        self.controller, self.blueprints, self.limits = controller, blueprints, limits
        self.model = tiny_model()
        self.losses: list[float] = []
        self.accs: list[float] = []

    def step(self, acc: float = 0.6, loss: float = 1.0, *, ratio: float | None = None,
             contribution: float | None = None, projected: float | None = None) -> Decision:
        self.losses.append(loss)
        self.accs.append(acc)
        for slot in self.model.slots():
            if slot.state is None:
                continue
            slot.record_accuracy(acc)
            if ratio is not None:
                slot.state.metrics.gradient_ratio = ratio
            if contribution is not None and seed_runs_in_forward(slot.stage):
                slot.record_contribution(contribution)
            if projected is not None and slot.stage == SeedStage.TRAINING:
                slot.record_projected_contribution(projected)
        counts = self.model.param_counts()
        signals = EpochSignals(
            epoch=len(self.losses), max_epochs=100, train_loss=loss, train_accuracy=acc, val_loss=loss,
            val_accuracy=acc, host_params=counts.host, seed_params=counts.seeds,
            val_loss_history=tuple(self.losses), val_accuracy_history=tuple(self.accs),
            train_loss_history=tuple(self.losses),
        )
        decision = self.controller.decide(signals, self.model)
        assert decision.reason, decision
        outcome = execute(self.model, decision, self.blueprints, self.limits)
        assert outcome.executed, (decision, outcome)
        self.model.step_epoch()
        return decision

    def stage(self, sid: str = "r0c0") -> SeedStage:
        return self.model.slot(sid).stage


# The older reference rule (germinate on a plateau from epoch 5, round robin, 5-epoch ramp): most
# tests below script its lifecycle; the default budget rule has its own tests at the end.
PLATEAU_RULE: dict[str, object] = {
    "min_epoch_to_germinate": 5,
    "require_plateau": True,
    "rotate_blueprints": True,
    "blend_tempo": 5,
}


def plateau_config(**overrides: object) -> HeuristicConfig:
    return HeuristicConfig(**{**PLATEAU_RULE, **overrides})


def heuristic(**overrides: object) -> HeuristicController:
    return HeuristicController(plateau_config(**overrides), list(ROTATION), LIMITS)


def to_germinated(run: Run) -> None:
    """Flat signals: stable and on a plateau from epoch 4, germinate at epoch 5."""
    decisions = [run.step() for _ in range(5)]
    assert [d.op for d in decisions] == [Op.WAIT] * 4 + [Op.GERMINATE]


def to_holding(run: Run) -> None:
    to_germinated(run)
    assert run.step().op == Op.ADVANCE and run.stage() == SeedStage.TRAINING
    waiting = run.step(0.6)  # G2: too few epochs, projected gain and gradient ratio never measured
    assert waiting.op == Op.WAIT and "G2" in waiting.reason and "never measured" in waiting.reason
    assert run.step(0.61, ratio=0.2, projected=1.0).op == Op.WAIT  # 2 epochs in stage: one short
    assert run.step(0.61, ratio=0.2, projected=1.0).op == Op.ADVANCE and run.stage() == SeedStage.BLENDING
    for _ in range(4):  # the 5-epoch ramp is still running
        blending = run.step(0.61)
        assert blending.op == Op.WAIT and "G3" in blending.reason
    assert run.step(0.61).op == Op.ADVANCE and run.stage() == SeedStage.HOLDING


def test_germinates_first_rotation_blueprint_into_r0c0_at_epoch_5() -> None:
    run = Run(heuristic())
    decisions = [run.step() for _ in range(5)]
    assert [d.op for d in decisions[:4]] == [Op.WAIT] * 4
    assert "too early" in decisions[3].reason  # stable and on a plateau, but epoch 4 < 5
    germ = decisions[4]
    assert (germ.op, germ.slot, germ.blueprint) == (Op.GERMINATE, "r0c0", "conv_light")
    assert (germ.alpha_algorithm, germ.blend_steps, germ.alpha_target) == (AlphaAlgorithm.ADD, 5, 1.0)
    assert run.stage() == SeedStage.GERMINATED


def test_no_germination_while_loss_falls_fast_then_germinates_once_stable() -> None:
    run = Run(heuristic())
    loss = 2.0
    for _ in range(12):
        loss *= 0.9  # 10% per epoch: far above the 3% stability threshold
        decision = run.step(loss=loss)
        assert decision.op == Op.WAIT
    assert "not stabilised" in decision.reason
    # Three consecutive epochs each < 3% better than the one before: stabilised on the third.
    ops = [run.step(loss=loss * (1 - 0.01 * k)).op for k in range(1, 4)]
    assert ops == [Op.WAIT, Op.WAIT, Op.GERMINATE]


def test_no_germination_without_a_plateau() -> None:
    run = Run(heuristic())
    for epoch in range(10):
        decision = run.step(acc=0.3 + 0.01 * epoch)  # +1 pt every epoch
        assert decision.op == Op.WAIT
    assert "no plateau (0/3" in decision.reason
    assert [run.step(acc=0.39 + 0.001 * k).op for k in range(1, 4)] == [Op.WAIT, Op.WAIT, Op.GERMINATE]


def test_signal_helpers() -> None:
    cfg = HeuristicConfig()
    assert host_stabilised((1.0, 0.99, 0.98, 0.97), cfg)
    assert not host_stabilised((1.0, 0.99, 1.0, 0.99, 0.98), cfg)  # a rise resets the streak
    assert host_stabilised((1.0, 0.99, 0.98, 0.97, 0.5, 0.3), cfg)  # latched once seen
    assert plateau_length((0.5, 0.6, 0.6, 0.601, 0.602), cfg) == 3
    assert plateau_length((0.6,), cfg) == 0


def test_full_lifecycle_fossilizes_a_real_contributor() -> None:
    run = Run(heuristic())
    to_holding(run)
    fossilize = run.step(0.61, contribution=2.0)
    assert (fossilize.op, fossilize.slot) == (Op.FOSSILIZE, "r0c0")
    assert run.stage() == SeedStage.FOSSILIZED
    assert run.controller.fossilizations == 1


@pytest.mark.parametrize(
    ("contribution", "acc", "op", "words"),
    [
        (0.1, 0.61, Op.PRUNE, "<= 0.5"),  # too small to keep
        (None, 0.61, Op.WAIT, "not measured"),  # unmeasured means wait, never "assume"
        (0.7, 0.61, Op.WAIT, "G5 refuses"),  # heuristic would keep it, strict G5 needs 1.0 pt
        (2.0, 0.58, Op.PRUNE, "since germination"),  # contributes, yet the model lost accuracy
    ],
)
def test_holding_judgement(contribution: float | None, acc: float, op: Op, words: str) -> None:
    run = Run(heuristic())
    to_holding(run)
    decision = run.step(acc, contribution=contribution)
    assert decision.op == op and words in decision.reason
    assert run.stage() == (SeedStage.HOLDING if op == Op.WAIT else SeedStage.EMBARGOED)


def test_holding_min_epochs_waits_before_judging() -> None:
    run = Run(heuristic(holding_min_epochs=2))
    to_holding(run)
    first = run.step(0.61, contribution=2.0)
    assert first.op == Op.WAIT and "1/2 epochs" in first.reason
    assert run.step(0.61, contribution=2.0).op == Op.FOSSILIZE


def test_stall_prunes_then_cooldown_then_next_free_slot_and_blueprint() -> None:
    run = Run(heuristic())
    to_germinated(run)
    assert run.step(0.6).op == Op.ADVANCE
    ops = [run.step(0.57).op for _ in range(4)]  # -3 pt since TRAINING started, 1..4 epochs in stage
    assert ops == [Op.WAIT] * 4
    prune = run.step(0.57)
    assert (prune.op, prune.slot) == (Op.PRUNE, "r0c0") and "stalled in TRAINING" in prune.reason
    state = run.controller.state_dict()
    assert state["penalties"]["conv_light"] == 2.0 and state["last_prune_epoch"] == 11
    waits = [run.step(0.57) for _ in range(4)]
    assert all(d.op == Op.WAIT and "since the last prune" in d.reason for d in waits)
    assert run.controller.state_dict()["penalties"]["conv_light"] == 2.0 / 16  # halved every epoch
    germ = run.step(0.57)  # 5 epochs after the prune; r0c0 is still cooling down
    assert run.stage("r0c0") in (SeedStage.EMBARGOED, SeedStage.RESETTING)
    assert (germ.op, germ.slot, germ.blueprint) == (Op.GERMINATE, "r0c1", "conv_heavy")


def test_penalised_blueprint_is_skipped_after_a_prune() -> None:
    blueprints = ["conv_light", "norm"]
    config = plateau_config(prune_penalty=3.0, penalty_decay=1.0)  # one prune reaches the threshold
    controller = HeuristicController(config, blueprints, LIMITS)
    run = Run(controller, blueprints)
    to_germinated(run)  # conv_light in r0c0
    assert run.step(0.6).op == Op.ADVANCE
    while run.step(0.57).op != Op.PRUNE:
        assert len(run.accs) < 20
    while (decision := run.step(0.57)).op != Op.GERMINATE:
        assert len(run.accs) < 30
    assert (decision.slot, decision.blueprint) == ("r0c1", "norm")
    assert run.step(0.57).op == Op.ADVANCE
    for _ in range(2):
        assert run.step(0.58, ratio=0.2, projected=1.0).op == Op.WAIT
    assert run.step(0.58, ratio=0.2, projected=1.0).op == Op.ADVANCE  # to BLENDING
    while run.step(0.58).op != Op.ADVANCE:  # to HOLDING
        assert len(run.accs) < 50
    assert run.step(0.58, contribution=2.0).op == Op.FOSSILIZE
    assert controller.rotation_index == 0 and controller.penalties == {"conv_light": 3.0, "norm": 0.0}
    decision = run.step(0.58)
    assert (decision.op, decision.slot, decision.blueprint) == (Op.GERMINATE, "r0c0", "norm")


def test_every_blueprint_penalised_means_wait() -> None:
    controller = heuristic()
    penalties = dict.fromkeys(ROTATION, 3.0)
    controller.load_state_dict({**controller.state_dict(), "penalties": penalties, "last_decay_epoch": 100})
    run = Run(controller)
    for _ in range(6):
        decision = run.step()
    assert decision.op == Op.WAIT and "unpenalised" in decision.reason


def test_rotation_skips_blueprints_over_the_parameter_budget() -> None:
    # r0c0 (4 channels): conv_light 60, conv_heavy 228, attention 40 parameters.
    limits = GrowthLimits(max_seeds=4, max_added_params=50)
    controller = HeuristicController(plateau_config(), list(ROTATION), limits)
    run = Run(controller, limits=limits)
    germ = [run.step() for _ in range(5)][-1]
    assert (germ.op, germ.slot, germ.blueprint) == (Op.GERMINATE, "r0c0", "attention")
    assert controller.rotation_index == 3


def test_one_live_experiment_by_default_two_when_configured() -> None:
    single, double = Run(heuristic()), Run(heuristic(max_live_experiments=2))
    for run in (single, double):
        to_germinated(run)
        assert run.step().op == Op.ADVANCE  # the live seed's action comes first
    assert single.step().op == Op.WAIT
    second = double.step()
    assert (second.op, second.slot, second.blueprint) == (Op.GERMINATE, "r0c1", "conv_heavy")


def test_partial_blend_target_is_ramped_to_full() -> None:
    run = Run(heuristic())
    run.model.germinate("r0c0", "norm", alpha_target=0.5, blend_steps=0)
    slot = run.model.slot("r0c0")
    assert run.step().op == Op.ADVANCE
    for _ in range(3):
        decision = run.step(ratio=0.5, projected=10.0)  # blending it in would gain 10 pt
    assert decision.op == Op.ADVANCE and slot.alpha.alpha == 0.5  # blend jumped to its 0.5 target
    retarget = run.step()
    assert (retarget.op, retarget.alpha_target, retarget.alpha_steps) == (Op.SET_ALPHA_TARGET, 1.0, 5)


def test_state_dict_round_trip_is_primitive_and_resumes_identically() -> None:
    a, b = Run(heuristic()), Run(heuristic())
    for run in (a, b):
        to_germinated(run)
        run.step(0.6)
        for _ in range(5):
            run.step(0.57)  # stall prune at the fifth
    buffer = io.BytesIO()
    torch.save(a.controller.state_dict(), buffer)
    buffer.seek(0)
    fresh = heuristic()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.state_dict() == a.controller.state_dict()
    b.controller = fresh
    assert [a.step(0.57) for _ in range(8)] == [b.step(0.57) for _ in range(8)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("prunes"), r"controller > prunes: missing required key"),
        (lambda s: s.update(extra=1), r"controller > extra: unknown key"),
        (lambda s: s.update(penalties={"conv_light": 0.0}), r"controller > penalties: expected one entry per"),
        (lambda s: s["penalties"].update(norm=-1.0), r"penalties > norm: expected a value >= 0.0, got -1.0"),
        (lambda s: s.update(rotation_index=5), r"rotation_index: expected < 5 \(the blueprint count\), got 5"),
        (lambda s: s.update(germinations=True), r"controller > germinations: expected int, got bool"),
        (lambda s: s.update(last_prune_epoch=1.0), r"controller > last_prune_epoch: expected int or None, got float"),
    ],
)
def test_load_state_dict_is_strict(change, message: str) -> None:  # type: ignore[no-untyped-def]
    controller = heuristic()
    state = controller.state_dict()
    state["penalties"] = dict(state["penalties"])
    change(state)
    before = controller.state_dict()
    with pytest.raises(ValueError, match=message):
        controller.load_state_dict(state)
    assert controller.state_dict() == before


def test_bad_construction_and_config() -> None:
    with pytest.raises(ValueError, match="expected HeuristicConfig, got dict"):
        HeuristicController({}, ROTATION, LIMITS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="names must be unique"):
        HeuristicController(HeuristicConfig(), ["norm", "norm"], LIMITS)
    with pytest.raises(ValueError, match="non-empty list"):
        HeuristicController(HeuristicConfig(), [], LIMITS)
    with pytest.raises(ValidationError, match="plateau_epochs"):
        HeuristicConfig(plateau_epochs=0)
    with pytest.raises(ValidationError, match="stall_epoch"):
        HeuristicConfig(stall_epoch=3)
    with pytest.raises(ValueError, match="decide model: expected a MorphogeneticModel, got str"):
        heuristic().decide(EpochSignals(1, 10, 1.0, 0.5, 1.0, 0.5, 10, 0), "model")


def test_penalty_decays_once_per_elapsed_epoch() -> None:
    controller = heuristic()
    penalties = {**dict.fromkeys(ROTATION, 0.0), "norm": 8.0}
    controller.load_state_dict({**controller.state_dict(), "penalties": penalties, "last_decay_epoch": 10})
    model = tiny_model()
    for epoch, expected in ((10, 8.0), (10, 8.0), (13, 1.0), (12, 1.0), (14, 0.5)):
        controller.decide(EpochSignals(epoch, 20, 1.0, 0.5, 1.0, 0.5, 100, 0), model)
        assert controller.penalties["norm"] == expected, epoch


# ---------------------------------------------------------------- the budget rule (default)
def test_budget_rule_germinates_the_preferred_blueprint_after_one_epoch() -> None:
    # No plateau needed: loss still falling fast and accuracy still rising at epoch 1.
    run = Run(HeuristicController(HeuristicConfig(), list(ROTATION), LIMITS))
    decision = run.step(acc=0.3, loss=2.0)
    assert (decision.op, decision.slot, decision.blueprint) == (Op.GERMINATE, "r0c0", "conv_light")
    assert "99 epochs left" in decision.reason


def test_budget_rule_waits_before_min_epoch_and_when_too_little_budget_is_left() -> None:
    early = Run(HeuristicController(HeuristicConfig(min_epoch_to_germinate=3), list(ROTATION), LIMITS))
    assert [early.step().op for _ in range(3)] == [Op.WAIT, Op.WAIT, Op.GERMINATE]
    late = Run(HeuristicController(HeuristicConfig(min_epochs_left_to_germinate=100), list(ROTATION), LIMITS))
    decision = late.step()
    assert decision.op == Op.WAIT and "too late" in decision.reason


def test_without_rotation_every_germination_takes_the_first_allowed_blueprint() -> None:
    controller = HeuristicController(HeuristicConfig(max_live_experiments=2), list(ROTATION), LIMITS)
    run = Run(controller)
    assert run.step().blueprint == "conv_light"  # r0c0
    assert run.step().op == Op.ADVANCE  # the live seed acts first
    second = run.step()
    assert (second.op, second.slot, second.blueprint) == (Op.GERMINATE, "r0c1", "conv_light")


def test_without_rotation_a_penalised_blueprint_moves_the_choice_on() -> None:
    controller = HeuristicController(HeuristicConfig(), list(ROTATION), LIMITS)
    penalties = {**dict.fromkeys(ROTATION, 0.0), "conv_light": 3.0}
    controller.load_state_dict({**controller.state_dict(), "penalties": penalties, "last_decay_epoch": 100})
    decision = Run(controller).step()
    assert (decision.op, decision.blueprint) == (Op.GERMINATE, "conv_heavy")
