"""The one epoch loop (`epoch_steps`): its generator protocol, and `run_epochs` as a driver of it."""

from __future__ import annotations

import math

import pytest
import torch

from esper.contracts.actions import Op
from esper.control.decision import Decision
from esper.telemetry import events as ev
from esper.training.config import GovernorConfig, TrainConfig
from esper.training.epoch_loop import EpochStep, LoopEnd, advance, epoch_steps, run_epochs
from esper.training.governor import GovernorVerdict
from esper.training.growth_run import GrowthRun

WAIT = Decision(Op.WAIT)


def tiny_run(epochs: int, emit: list[ev.TelemetryEvent] | None = None, **fields: object) -> GrowthRun:
    config = TrainConfig(task="mnist1d-blind", epochs=epochs, max_batches_per_epoch=2, seed=4, **fields)  # type: ignore[arg-type]
    return GrowthRun(config, emit=None if emit is None else emit.append)


def test_each_epoch_yields_its_signals_and_each_decision_is_applied_then_committed() -> None:
    events: list[ev.TelemetryEvent] = []
    run = tiny_run(3, events)
    commits: list[int] = []
    loop = epoch_steps(run, "driver", commit=lambda: commits.append(run.epoch))
    step = advance(loop)
    assert isinstance(step, EpochStep) and step.applied is None and not step.rolled_back
    assert step.signals.epoch == 1 and run.epoch == 1 and commits == []
    # A decision the executor refuses is applied (refused, with its reason) and the loop goes on.
    refused = Decision(Op.ADVANCE, slot=run.model.slot_ids()[0], reason="test")
    step = advance(loop, refused)
    assert isinstance(step, EpochStep) and step.signals.epoch == 2 and commits == [1]
    assert step.applied is not None and not step.applied.executed and "not allowed" in step.applied.reason
    decisions = [e for e in events if isinstance(e, ev.ControllerDecision)]
    assert [(d.controller, d.op, d.executed, d.epoch) for d in decisions] == [("driver", "ADVANCE", False, 1)]
    step = advance(loop, WAIT)
    assert isinstance(step, EpochStep) and step.applied is not None and step.applied.executed
    end = advance(loop, WAIT)
    assert isinstance(end, LoopEnd) and end.reason == "completed" and end.completed and not end.aborted
    assert end.applied is not None and end.applied.executed
    assert commits == [1, 2, 3] and run.finished
    with pytest.raises(StopIteration):
        next(loop)


def test_stop_after_ends_the_loop_at_that_epoch_committed() -> None:
    run = tiny_run(5)
    commits: list[int] = []
    loop = epoch_steps(run, "driver", commit=lambda: commits.append(run.epoch), stop_after=2)
    step = advance(loop)
    step = advance(loop, WAIT)
    assert isinstance(step, EpochStep)
    end = advance(loop, WAIT)
    assert isinstance(end, LoopEnd) and end.reason == "stopped after epoch 2" and not end.completed
    assert commits == [1, 2] and run.epoch == 2 and not run.finished


def test_a_governor_abort_ends_the_loop_committed_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    run = tiny_run(6, governor=GovernorConfig(max_rollbacks=1))
    monkeypatch.setattr(run.governor, "check", lambda loss, epoch: GovernorVerdict(epoch >= 2, "forced by the test"))
    commits: list[int] = []
    loop = epoch_steps(run, "driver", commit=lambda: commits.append(run.epoch))
    first = advance(loop)
    assert isinstance(first, EpochStep) and not first.rolled_back
    rolled = advance(loop, WAIT)  # epoch 2: the first rollback, within the limit
    assert isinstance(rolled, EpochStep) and rolled.rolled_back and math.isnan(rolled.signals.train_loss)
    end = advance(loop, WAIT)  # epoch 3: the second rollback is one too many
    assert isinstance(end, LoopEnd) and end.aborted and not end.completed
    assert end.reason.startswith("governor abort: stopped after 2 rollbacks") and "forced by the test" in end.reason
    assert end.applied is not None and end.applied.executed  # the WAIT sent before epoch 3 was applied
    assert commits == [1, 2, 3] and run.epoch == 3


def test_the_loop_accepts_only_decisions() -> None:
    loop = epoch_steps(tiny_run(2), "driver")
    advance(loop)
    with pytest.raises(TypeError, match="expected a Decision to be sent, got str"):
        loop.send("WAIT")  # type: ignore[arg-type]


def test_run_epochs_is_the_loop_answered_by_the_controller() -> None:
    """`run_epochs` and a hand-driven `epoch_steps` asking the same controller give the same run."""
    runs, ends = [], []
    for drive in ("run_epochs", "by_hand"):
        events: list[ev.TelemetryEvent] = []
        run = tiny_run(5, events, controller="random")
        controller = run.make_controller()
        if drive == "run_epochs":
            end = run_epochs(run, controller)
        else:
            loop = epoch_steps(run, controller.name)
            step = advance(loop)
            while isinstance(step, EpochStep):
                step = advance(loop, controller.decide(step.signals, run.model))
            end = step
        runs.append((run, [e.model_dump(exclude={"time"}) for e in events]))
        ends.append(end)
    (a, a_events), (b, b_events) = runs
    assert ends[0] == ends[1] and ends[0].completed
    assert a.history == b.history and a_events == b_events
    assert any(e["type"] == "controller_decision" for e in a_events)
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)

