"""The growth step: what a growing model goes through at the end of every training epoch.

Every driver runs these in this order: `esper train`, `esper evaluate` and the RL
environments through GrowthRun (`train_epoch`, then `apply`) in the one epoch loop
(esper.training.epoch_loop.epoch_steps), a hand-written loop and the Lightning
callback through Grower (`end_epoch`).

1. `measure_contributions`: each seed's counterfactual contribution on held-out data;
2. `end_epoch`: the contributions and the epoch's validation accuracy are recorded in
   the slots, then the slots tick (alpha ramps, embargoes, prunes that finish);
3. the driver appends the epoch to its history and builds the EpochSignals;
4. `decide`: the controller decides; under torchrun every rank takes rank 0's decision;
5. `esper.control.execute.execute` carries it out, or refuses it and says why.

In the epoch loop, 1-3 run in `train_epoch`, the loop yields the signals, and 5 runs
when the driver sends its decision: `run_epochs` takes it through `decide` (4), the
RL environment takes the policy's action instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import TensorDataset

from esper.control.decision import Controller, Decision, EpochSignals
from esper.model import MorphogeneticModel
from esper.seeds.sync import sync_decision
from esper.training.counterfactual import Counterfactuals, measure


def measure_contributions(
    model: MorphogeneticModel, dataset: TensorDataset, batch_size: int, device: torch.device
) -> Counterfactuals:
    """Step 1: the seeds' counterfactual contributions on `dataset` (one fused pass)."""
    # Only strict G2 reads a projected gain: permissive gates skip its extra fused settings.
    project = not model.gate_config.permissive
    return measure(model, dataset, batch_size, device, project=project)


def end_epoch(
    model: MorphogeneticModel,
    *,
    val_accuracy: float,
    measured: Counterfactuals | None,
    before_tick: Callable[[], None] | None = None,
) -> None:
    """Step 2: record `measured` (None: nothing was measured) and `val_accuracy` in the slots, then tick them.

    `before_tick` runs on the recorded, not yet ticked, state (GrowthRun reports the
    contributions and lets the governor snapshot it there).
    """
    if measured is not None:
        for slot_id, gain in measured.projected.items():
            model.slot(slot_id).record_projected_contribution(gain)
        for slot_id, contribution in measured.contributions.items():
            model.slot(slot_id).record_contribution(contribution)
    for slot in model.slots():
        slot.record_accuracy(val_accuracy)
    if before_tick is not None:
        before_tick()
    model.step_epoch()


def decide(controller: Controller, signals: EpochSignals, model: MorphogeneticModel) -> Decision:
    """Step 4: the controller's decision; under torchrun, rank 0's on every rank.

    Each rank's signals come from its own shard, so a controller asked on every rank may
    answer differently; every rank must take the same transition.
    """
    return sync_decision(controller.decide(signals, model))
