"""Counterfactual contributions: what accuracy does each seed really add?

All alpha settings are evaluated in ONE fused batched pass per validation
batch (MorphogeneticModel.fused_forward):
- "all": every seed as it is;
- for each TRAINING seed, when `project` is set: that seed blended in at alpha 1 (its
  projected gain, which strict G2 judges; permissive runs skip these settings);
- for each seed with alpha > 0: that seed off (its contribution);
- with 2-4 such seeds: all off, each seed alone, each pair alone — giving
  pairwise interactions I_ij = v({i,j}) - v({i}) - v({j}) + v({}).
Values are accuracies in percentage points.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch.utils.data import TensorDataset

from esper import distributed
from esper.contracts.stages import SeedStage
from esper.distributed.collectives import all_reduce_tensor_sum
from esper.distributed.measurement import collective_measurement
from esper.distributed.sharding import evaluation_shard
from esper.model import MorphogeneticModel
from esper.training.batches import eval_mode

MAX_INTERACTION_SEEDS = 4


@dataclass(frozen=True)
class Counterfactuals:
    accuracy_all: float  # points
    contributions: dict[str, float]  # slot -> points lost when it is switched off
    interactions: dict[str, dict[str, float]]  # slot -> other slot -> I_ij
    projected: dict[str, float]  # TRAINING slot -> points gained if blended in at alpha 1


def training_slots(model: MorphogeneticModel) -> list[str]:
    return [s.slot_id for s in model.slots() if s.stage == SeedStage.TRAINING]


def measured_slots(model: MorphogeneticModel) -> list[str]:
    """Seeds whose alpha is > 0 and which are still being judged (BLENDING/HOLDING)."""
    return [
        s.slot_id
        for s in model.slots()
        if s.stage in (SeedStage.BLENDING, SeedStage.HOLDING) and s.alpha.alpha > 0.0
    ]


def _settings(slots: list[str], training: list[str]) -> list[tuple[str, dict[str, float | None]]]:
    """Named alpha settings; None means "the seed's own alpha", 0.0 means off."""
    settings: list[tuple[str, dict[str, float | None]]] = [("all", {})]
    settings += [(f"on:{s}", {s: 1.0}) for s in training]
    settings += [(f"off:{s}", {s: 0.0}) for s in slots]
    if 2 <= len(slots) <= MAX_INTERACTION_SEEDS:
        off_all: dict[str, float | None] = {s: 0.0 for s in slots}
        settings.append(("none", off_all))
        settings += [(f"only:{s}", {**off_all, s: None}) for s in slots]
        settings += [(f"only:{a}+{b}", {**off_all, a: None, b: None}) for a, b in combinations(slots, 2)]
    return settings


def measure(
    model: MorphogeneticModel,
    dataset: TensorDataset,
    batch_size: int,
    device: torch.device,
    *,
    project: bool,
) -> Counterfactuals:
    """Counterfactual accuracies; `project`: also each TRAINING seed's projected gain."""
    slots = measured_slots(model)
    training = training_slots(model) if project else []
    if not slots and not training:
        return Counterfactuals(accuracy_all=float("nan"), contributions={}, interactions={}, projected={})
    own = {s: model.slot(s).alpha.alpha for s in slots}
    named = _settings(slots, training)
    resolved = [{sid: own[sid] if a is None else a for sid, a in setting.items()} for _, setting in named]
    # Under torchrun every rank evaluates the same settings on its own shard, then the counts are summed.
    x, y = evaluation_shard(dataset).tensors
    correct = torch.zeros(len(named), dtype=torch.float64)
    items = 0
    with eval_mode(model), torch.no_grad(), collective_measurement():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
            logits = model.fused_forward(xb, resolved)  # (K, B, ..., classes)
            predictions = logits.argmax(dim=-1)
            correct += (predictions == yb.unsqueeze(0)).reshape(len(named), -1).sum(dim=1).double().cpu()
            items += yb.numel()
    if distributed.active():
        correct = all_reduce_tensor_sum(correct)
        items = int(distributed.all_reduce_sums([items])[0])
    value = {name: 100.0 * float(c) / items for (name, _), c in zip(named, correct, strict=True)}
    contributions = {s: value["all"] - value[f"off:{s}"] for s in slots}
    interactions: dict[str, dict[str, float]] = {s: {} for s in slots}
    if "none" in value:
        for a, b in combinations(slots, 2):
            pair = value[f"only:{a}+{b}"] - value[f"only:{a}"] - value[f"only:{b}"] + value["none"]
            interactions[a][b] = pair
            interactions[b][a] = pair
    projected = {s: value[f"on:{s}"] - value["all"] for s in training}
    return Counterfactuals(
        accuracy_all=value["all"], contributions=contributions, interactions=interactions, projected=projected
    )
