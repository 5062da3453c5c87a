"""The distributed parts of a growth run: how an epoch trains under DDP, and global evaluation.

GrowthRun trains with a DistributedPass only when a process group with several ranks is
active; a single process trains with esper.training.epoch_pass.LocalPass (and keeps its
bit-identical results). Both run the same loop, esper.training.epoch_pass.train_pass.
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
from esper.training.batches import Evaluation, evaluation_sums
from esper.training.epoch_pass import run_batches

if TYPE_CHECKING:
    from esper.training.growth_run import GrowthRun


class DistributedPass:
    """How a GrowthRun trains and evaluates an epoch under DDP (esper.training.epoch_pass runs the loop).

    Each rank trains on its own shard, its gradients all-reduced by DDP. A non-finite loss on
    one rank does not end the pass early there (the other ranks would wait in DDP's all-reduce
    for ever): the pass runs to its end, and the summed loss is non-finite on every rank, so the
    governor rolls back everywhere at once.
    """

    stops_on_nonfinite_loss = False

    def __init__(self, module: TrainingModule) -> None:
        self.module = module

    def batches(self, run: GrowthRun) -> list[tuple[Tensor, Tensor]]:
        return run_batches(run, sharded_epoch_batches)

    def forward(self, run: GrowthRun) -> Callable[[Tensor], Tensor]:
        return self.module.current()

    def totals(self, run: GrowthRun, loss_sum: float, correct: int, items: int) -> tuple[float, float]:
        broadcast_buffers(run.model)
        total_loss, correct_sum, items_sum = all_reduce_sums([loss_sum, correct, items])
        return total_loss / items_sum, correct_sum / items_sum

    def evaluate(self, run: GrowthRun, dataset: TensorDataset) -> Evaluation:
        return evaluate_global(run.model, dataset, run.batch_size * 4, run.device)


def evaluate_global(
    forward: Callable[[Tensor], Tensor], dataset: TensorDataset, batch_size: int, device: torch.device
) -> Evaluation:
    """Loss and accuracy over the whole `dataset`: each rank evaluates its shard, sums are all-reduced."""
    total_loss, total_correct, total_items = evaluation_sums(forward, evaluation_shard(dataset), batch_size, device)
    loss_sum, correct_sum, items_sum = all_reduce_sums([total_loss, total_correct, total_items])
    return Evaluation(loss=loss_sum / items_sum, accuracy=correct_sum / items_sum)
