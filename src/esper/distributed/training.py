"""The distributed parts of a growth run: a training pass under DDP and global evaluation.

Used by GrowthRun only when a process group with several ranks is active; a single
process keeps its own code path (and its bit-identical results).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from esper.distributed.collectives import all_reduce_sums
from esper.distributed.ddp import TrainingModule, broadcast_buffers
from esper.distributed.sharding import evaluation_shard, sharded_epoch_batches
from esper.training.batches import Evaluation, evaluation_sums, loss_and_correct

if TYPE_CHECKING:
    from esper.training.growth_run import GrowthRun


def train_pass(run: GrowthRun, module: TrainingModule) -> tuple[float, float]:
    """One epoch on this rank's shard, gradients all-reduced by DDP; global loss and accuracy.

    A non-finite loss on one rank does not end the pass early there (the other ranks would
    wait in DDP's all-reduce for ever): the pass runs to its end, and the summed loss is
    non-finite on every rank, so the governor rolls back everywhere at once.
    """
    run.model.train()
    total_loss, correct, items = 0.0, 0, 0
    batches = list(
        sharded_epoch_batches(
            run.splits.train,
            run.batch_size,
            seed=run.config.seed,
            epoch=run.epoch,
            max_batches=run.max_batches,
            device=run.device,
        )
    )
    # The structure only changes between epochs: look the wrapper up once per pass, not per step.
    wrapped = module.current()
    for index, (xb, yb) in enumerate(batches):
        run.optimizers.zero_grad()
        loss, batch_correct = loss_and_correct(wrapped(xb), yb)
        proximal = run.model.proximal_penalty()
        objective = loss if proximal is None else loss + run.config.training_proximal_weight * proximal
        objective.backward()
        if index == len(batches) - 1:
            # After DDP's all-reduce every rank holds the averaged gradients: the ratios are global.
            run.model.measure_gradients()
        run.optimizers.step()
        total_loss += float(loss.detach()) * yb.numel()
        correct += int(batch_correct)
        items += yb.numel()
    broadcast_buffers(run.model)
    total_loss, correct_sum, items_sum = all_reduce_sums([total_loss, correct, items])
    return total_loss / items_sum, correct_sum / items_sum


def evaluate_global(
    forward: Callable[[Tensor], Tensor], dataset: TensorDataset, batch_size: int, device: torch.device
) -> Evaluation:
    """Loss and accuracy over the whole `dataset`: each rank evaluates its shard, sums are all-reduced."""
    total_loss, total_correct, total_items = evaluation_sums(forward, evaluation_shard(dataset), batch_size, device)
    loss_sum, correct_sum, items_sum = all_reduce_sums([total_loss, total_correct, total_items])
    return Evaluation(loss=loss_sum / items_sum, accuracy=correct_sum / items_sum)
