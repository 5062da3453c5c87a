"""Counting a frontier run's training FLOPs: the host's forward pass and each seed's, per example.

FLOPs are counted by torch's FlopCounterMode (matrix multiplications and
convolutions) on one real training batch. A seed is counted as its own module
on the activation its slot receives, for the epochs in which it ran in the
forward pass (read from the run's events).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from esper.model import MorphogeneticModel
from esper.telemetry.events import SeedStageChanged

# Stages after which a seed's module no longer runs in the forward pass.
_ENDED = ("PRUNED", "DORMANT")


def forward_flops(model: torch.nn.Module, batch: torch.Tensor) -> int:
    """FLOPs of one forward pass of `model` on `batch`, counted by torch's FlopCounterMode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(batch)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def slot_inputs(model: MorphogeneticModel, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """The activation each slot of `model` receives on `batch` (one forward pass, no gradients)."""
    captured: dict[str, torch.Tensor] = {}
    handles = [
        slot.register_forward_pre_hook(lambda _module, args, sid=slot.slot_id: captured.setdefault(sid, args[0]))
        for slot in model.slots()
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(batch)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return captured


def seed_forward_flops(model: MorphogeneticModel, inputs: dict[str, torch.Tensor], slot_id: str, blueprint: str) -> int:
    """FLOPs of one forward pass of a fresh `blueprint` seed module at `slot_id` on that slot's input."""
    slot = model.slot(slot_id)
    seed = slot.registry.create(blueprint, slot.shape)
    return forward_flops(seed, inputs[slot_id])


def seed_forward_epochs(events: Sequence[Any], epochs: int) -> list[tuple[str, str, int]]:
    """(slot, blueprint, epochs in which the seed's module ran in the forward pass) per seed.

    A seed runs from the epoch after it entered TRAINING (the decision that moves it comes
    at the end of an epoch) until the epoch at whose end it was pruned, or to the last epoch.
    """
    spans: list[tuple[str, str, int]] = []
    running: dict[str, tuple[str, int]] = {}  # slot -> (blueprint, first epoch in the forward pass)
    for event in events:
        if not isinstance(event, SeedStageChanged):
            continue
        if event.to_stage == "TRAINING" and event.slot not in running:
            if event.blueprint is None:
                raise ValueError(f"events: slot {event.slot} entered TRAINING at epoch {event.epoch} with no blueprint")
            running[event.slot] = (event.blueprint, event.epoch + 1)
        elif event.to_stage in _ENDED and event.slot in running:
            blueprint, first = running.pop(event.slot)
            spans.append((event.slot, blueprint, max(0, event.epoch - first + 1)))
    for slot, (blueprint, first) in running.items():
        spans.append((slot, blueprint, max(0, epochs - first + 1)))
    return spans
