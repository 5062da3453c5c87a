"""Deterministic batching and evaluation for classification and language models.

The order of training examples in epoch e depends only on (seed, e), so a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset


def epoch_batches(
    dataset: TensorDataset,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    max_batches: int | None,
    device: torch.device,
) -> Iterator[tuple[Tensor, Tensor]]:
    x, y = dataset.tensors
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(dataset), generator=generator)
    starts = range(0, len(order), batch_size)
    if max_batches is not None:
        starts = starts[:max_batches]
    for start in starts:
        index = order[start : start + batch_size]
        yield x[index].to(device), y[index].to(device)


def loss_and_correct(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and the number of correct predictions (per token for LMs)."""
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_targets = targets.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_targets)
    correct = (flat_logits.argmax(dim=-1) == flat_targets).sum()
    return loss, correct


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float


def evaluation_sums(
    forward: Callable[[Tensor], Tensor], dataset: TensorDataset, batch_size: int, device: torch.device
) -> tuple[float, int, int]:
    """Summed loss (loss x items), correct predictions and items over `dataset`.

    Sums, not means, so several shards (ranks) can be added before dividing.
    """
    x, y = dataset.tensors
    total_loss, total_correct, total_items = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
            loss, correct = loss_and_correct(forward(xb), yb)
            items = yb.numel()
            total_loss += float(loss) * items
            total_correct += int(correct)
            total_items += items
    return total_loss, total_correct, total_items


def evaluate(
    forward: Callable[[Tensor], Tensor], dataset: TensorDataset, batch_size: int, device: torch.device
) -> Evaluation:
    total_loss, total_correct, total_items = evaluation_sums(forward, dataset, batch_size, device)
    return Evaluation(loss=total_loss / total_items, accuracy=total_correct / total_items)


def eval_mode(model: nn.Module) -> _EvalMode:
    return _EvalMode(model)


class _EvalMode:
    """Context manager: eval mode inside, the previous mode restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.was_training = model.training

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)
