"""How a GrowthRun trains and evaluates one epoch: the one training loop, and the pluggable parts of it.

`train_pass(run, how)` is the only loop over a training epoch's batches. `how`
(an EpochPass) says where the batches come from, what the forward runs
through, and how the per-rank sums become the epoch's loss and accuracy:

- `LocalPass`: one process, the whole training set, the model itself;
- `esper.training.distributed.DistributedPass`: this rank's shard, the
  DistributedDataParallel wrapper, sums added across ranks.

The run picks one in `GrowthRun.epoch_pass()`; a subclass may return its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from esper.interrupts import raise_if_interrupted
from esper.training.batches import Evaluation, epoch_batches, evaluate, loss_and_correct

if TYPE_CHECKING:
    from esper.training.growth_run import GrowthRun

Batch = tuple[Tensor, Tensor]


def run_batches(run: GrowthRun, batcher: Callable[..., Iterable[Batch]]) -> list[Batch]:
    """This epoch's training batches of `run`, in the order `batcher` (whole set or this rank's shard) gives."""
    return list(
        batcher(
            run.splits.train,
            run.batch_size,
            seed=run.plan.seed,
            epoch=run.epoch,
            max_batches=run.max_batches,
            device=run.device,
        )
    )


class EpochPass(Protocol):
    # A process that stops at a non-finite loss saves the rest of the pass; a DDP rank must not
    # (the other ranks would wait for it in the gradient all-reduce for ever).
    stops_on_nonfinite_loss: bool

    def batches(self, run: GrowthRun) -> list[Batch]:
        """This epoch's training batches, in order."""
        ...

    def forward(self, run: GrowthRun) -> Callable[[Tensor], Tensor]:
        """What a training batch runs through (asked before each batch)."""
        ...

    def totals(self, run: GrowthRun, loss_sum: float, correct: int, items: int) -> tuple[float, float]:
        """(mean loss, accuracy) of the epoch from this process's sums."""
        ...

    def evaluate(self, run: GrowthRun, dataset: Any) -> Evaluation:
        """Loss and accuracy of the run's model (already in eval mode) over the whole `dataset`."""
        ...


class LocalPass:
    """One process: the whole training set through the model itself."""

    stops_on_nonfinite_loss = True

    def batches(self, run: GrowthRun) -> list[Batch]:
        return run_batches(run, epoch_batches)

    def forward(self, run: GrowthRun) -> Callable[[Tensor], Tensor]:
        return run.model

    def totals(self, run: GrowthRun, loss_sum: float, correct: int, items: int) -> tuple[float, float]:
        return loss_sum / items, correct / items

    def evaluate(self, run: GrowthRun, dataset: Any) -> Evaluation:
        return evaluate(run.model, dataset, run.batch_size * 4, run.device)


def train_pass(run: GrowthRun, how: EpochPass) -> tuple[float, float]:
    """Train `run`'s model for one epoch; its (mean training loss, training accuracy), NaN if the loss diverged."""
    run.model.train()
    total_loss, correct, items = 0.0, 0, 0
    batches = how.batches(run)
    # The structure only changes between epochs: the forward (under DDP, the wrapper) is looked up once a pass.
    forward = how.forward(run)
    for index, (xb, yb) in enumerate(batches):
        raise_if_interrupted()  # a Ctrl-C whose KeyboardInterrupt third-party code swallowed
        run.optimizers.zero_grad()
        with run.model.recording_proximal() as record:
            loss, batch_correct = loss_and_correct(forward(xb), yb)
        if how.stops_on_nonfinite_loss and not torch.isfinite(loss):
            return math.nan, math.nan
        proximal = record.penalty()
        objective = loss if proximal is None else loss + run.plan.training_proximal_weight * proximal
        objective.backward()
        if index == len(batches) - 1:
            # Under DDP this follows the gradient all-reduce: every rank measures the same ratios.
            run.model.measure_gradients()
        run.optimizers.step()
        total_loss += float(loss.detach()) * yb.numel()
        correct += int(batch_correct)
        items += yb.numel()
    return how.totals(run, total_loss, correct, items)
