"""The epoch loop: train an epoch, take the growth step, commit; until the run is finished.

`esper train` (with a checkpoint as its commit) and `esper evaluate` (without) run
this loop. The RL environment runs the same two halves of it one step at a time,
because its decision is the policy's action and arrives from outside:
`reset` is the first `train_epoch`, each `step(action)` is `apply` and the next
`train_epoch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from esper.control.decision import Controller
from esper.pause_points import pause_point
from esper.training.growth_run import GovernorAbort, GrowthRun
from esper.training.growth_step import decide

# finish_reason of a run the governor stopped (its rollbacks were exhausted).
GOVERNOR_ABORT = "governor abort"
COMPLETED = "completed"


@dataclass(frozen=True)
class LoopEnd:
    """Why `run_epochs` returned: "completed", "stopped after epoch N", or "governor abort: ..."."""

    reason: str
    aborted: bool = False

    @property
    def completed(self) -> bool:
        return self.reason == COMPLETED


def run_epochs(
    run: GrowthRun,
    controller: Controller,
    *,
    commit: Callable[[], None] | None = None,
    stop_after: int | None = None,
) -> LoopEnd:
    """Drive `run` with `controller` until it is finished, the governor aborts it, or epoch `stop_after`.

    Each epoch: `run.train_epoch()` (training, validation and the growth step up to the
    signals), `decide` (rank 0's decision everywhere), `run.apply`, then `commit` (the
    epoch's events are all written when it is called). An aborted run is committed too.
    """
    try:
        while not run.finished:
            signals = run.train_epoch()
            run.apply(decide(controller, signals, run.model), controller.name)
            pause_point("epoch-events")
            if commit is not None:
                commit()
            if stop_after is not None and run.epoch >= stop_after and not run.finished:
                return LoopEnd(f"stopped after epoch {run.epoch}")
    except GovernorAbort as error:
        if commit is not None:
            commit()
        return LoopEnd(f"{GOVERNOR_ABORT}: {error}", aborted=True)
    return LoopEnd(COMPLETED)
