"""The epoch loop: train an epoch, take the growth step, commit; until the run is finished.

One generator, `epoch_steps`, is the loop, and every driver runs it:

    loop = epoch_steps(run, "heuristic", commit=checkpoint)
    step = next(loop)                         # trains epoch 1, stops at its decision
    step = loop.send(decision)                # applies it, commits, trains epoch 2, ...
    ...                                       # StopIteration.value is the LoopEnd

It trains an epoch and yields its `EpochStep` (the signals a decision is made
from); whatever the driver sends back is applied as the growth step's decision,
then the epoch is committed. The driver only decides:

- `run_epochs` (`esper train`, `compare`, `frontier` with a checkpoint as the
  commit; `esper evaluate` without) answers each step with
  `decide(controller, signals, model)`: the controller's decision, rank 0's on
  every rank under torchrun;
- the RL environment (`esper.growth_rl.environment.GrowthEnv`, its vectorised
  and gymnasium views, and the expert that imitation records) answers with the
  policy's action: `reset` starts the loop, each `step(action)` sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

from esper.control.decision import Controller, Decision, EpochSignals
from esper.control.execute import Outcome
from esper.pause_points import pause_point
from esper.training.growth_run import GovernorAbort, GrowthRun
from esper.training.growth_step import decide

# finish_reason of a run the governor stopped (its rollbacks were exhausted).
GOVERNOR_ABORT = "governor abort"
COMPLETED = "completed"


@dataclass(frozen=True)
class EpochStep:
    """One trained epoch, waiting for its decision.

    `rolled_back`: the governor rolled the model back during this epoch.
    `applied`: how the decision sent before this epoch was carried out (None before the first).
    """

    signals: EpochSignals
    rolled_back: bool
    applied: Outcome | None


@dataclass(frozen=True)
class LoopEnd:
    """Why the loop ended: "completed", "stopped after epoch N", or "governor abort: ...".

    `applied`: how the last decision sent was carried out (None when none was sent).
    """

    reason: str
    aborted: bool = False
    applied: Outcome | None = None

    @property
    def completed(self) -> bool:
        return self.reason == COMPLETED


EpochLoop = Generator[EpochStep, Decision, LoopEnd]


def epoch_steps(
    run: GrowthRun,
    controller: str,
    *,
    commit: Callable[[], None] | None = None,
    stop_after: int | None = None,
) -> EpochLoop:
    """The loop over `run` until it is finished, the governor aborts it, or epoch `stop_after`.

    Each epoch: `run.train_epoch()` (training, validation and the growth step up to the
    signals), yield them, `run.apply` the decision sent back (its events name
    `controller`), then `commit` (the epoch's events are all written when it is called).
    An aborted run is committed too. Returns the `LoopEnd`.
    """
    applied: Outcome | None = None
    try:
        while not run.finished:
            rollbacks = run.governor.rollbacks
            signals = run.train_epoch()
            decision = yield EpochStep(signals, run.governor.rollbacks > rollbacks, applied)
            if not isinstance(decision, Decision):
                raise TypeError(f"epoch_steps: expected a Decision to be sent, got {type(decision).__name__}")
            applied = run.apply(decision, controller)
            pause_point("epoch-events")
            if commit is not None:
                commit()
            if stop_after is not None and run.epoch >= stop_after and not run.finished:
                return LoopEnd(f"stopped after epoch {run.epoch}", applied=applied)
    except GovernorAbort as error:
        if commit is not None:
            commit()
        return LoopEnd(f"{GOVERNOR_ABORT}: {error}", aborted=True, applied=applied)
    return LoopEnd(COMPLETED, applied=applied)


def advance(loop: EpochLoop, decision: Decision | None = None) -> EpochStep | LoopEnd:
    """Start `loop` (no decision) or send it `decision`: the next step, or the loop's end."""
    try:
        return next(loop) if decision is None else loop.send(decision)
    except StopIteration as stop:
        end: LoopEnd = stop.value
        return end


def run_epochs(
    run: GrowthRun,
    controller: Controller,
    *,
    commit: Callable[[], None] | None = None,
    stop_after: int | None = None,
) -> LoopEnd:
    """Drive `run` with `controller` through `epoch_steps` (see there for `commit` and `stop_after`).

    Each step is answered with `decide`: the controller's decision, rank 0's on every rank.
    """
    loop = epoch_steps(run, controller.name, commit=commit, stop_after=stop_after)
    step = advance(loop)
    while isinstance(step, EpochStep):
        step = advance(loop, decide(controller, step.signals, run.model))
    return step
