"""The governor: snapshots committed state and rolls back when training breaks.

Committed state = the host plus fossilized seeds. A rollback restores it,
prunes every experimental seed, and clears optimizer state. Triggers:
a NaN/Inf loss (at once); "lobotomy" — loss stuck at chance level
ln(num_classes) after enough epochs; divergence — loss > min, > mean + k·σ
of a recent window and > r·mean, several epochs in a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from esper.checkpoints.run_state import GovernorState
from esper.contracts.stages import SeedStage, is_active
from esper.model import MorphogeneticModel
from esper.training.config import GovernorConfig


@dataclass
class GovernorVerdict:
    rollback: bool
    reason: str = ""


@dataclass
class Governor:
    config: GovernorConfig
    num_classes: int
    rollbacks: int = 0
    loss_history: list[float] = field(default_factory=list)
    divergence_streak: int = 0
    snapshot_epoch: int = -1
    snapshot: dict[str, torch.Tensor] = field(default_factory=dict)

    # ----------------------------------------------------------- snapshots
    @staticmethod
    def committed_state(model: MorphogeneticModel) -> dict[str, torch.Tensor]:
        """Host tensors plus fossilized seeds' tensors, keyed as in model.state_dict()."""
        fossil_prefixes = tuple(
            f"seed_slots.{s.slot_id}." for s in model.slots() if s.stage == SeedStage.FOSSILIZED
        )
        return {
            name: tensor.detach().to("cpu", copy=True)
            for name, tensor in model.state_dict().items()
            if name.startswith("host.") or name.startswith(fossil_prefixes)
        }

    def take_snapshot(self, model: MorphogeneticModel, epoch: int) -> None:
        self.snapshot = self.committed_state(model)
        self.snapshot_epoch = epoch

    def maybe_snapshot(self, model: MorphogeneticModel, epoch: int, fossilized_now: bool) -> bool:
        due = self.snapshot_epoch < 0 or epoch - self.snapshot_epoch >= self.config.snapshot_every
        if due or fossilized_now:
            self.take_snapshot(model, epoch)
            return True
        return False

    # ------------------------------------------------------------- checks
    def check(self, train_loss: float, epoch: int) -> GovernorVerdict:
        if not self.config.enabled:
            return GovernorVerdict(False)
        if not math.isfinite(train_loss):
            return GovernorVerdict(True, f"non-finite training loss ({train_loss})")
        window = self.loss_history[-self.config.divergence_window :]
        self.loss_history.append(train_loss)
        chance = math.log(self.num_classes)
        if (
            epoch >= self.config.lobotomy_after_epochs
            and abs(train_loss - chance) <= self.config.lobotomy_tolerance * chance
        ):
            return GovernorVerdict(
                True, f"loss {train_loss:.4f} stuck at chance level ln({self.num_classes})={chance:.4f}"
            )
        if len(window) >= 3:
            mean = sum(window) / len(window)
            std = math.sqrt(sum((v - mean) ** 2 for v in window) / len(window))
            diverging = (
                train_loss > self.config.divergence_min_loss
                and train_loss > mean + self.config.divergence_sigmas * std
                and train_loss > self.config.divergence_mean_ratio * mean
            )
            self.divergence_streak = self.divergence_streak + 1 if diverging else 0
            if self.divergence_streak >= self.config.divergence_consecutive:
                return GovernorVerdict(True, f"loss diverged ({train_loss:.3f} vs window mean {mean:.3f})")
        return GovernorVerdict(False)

    @property
    def exhausted(self) -> bool:
        return self.rollbacks > self.config.max_rollbacks

    def rollback(self, model: MorphogeneticModel, reason: str) -> list[str]:
        """Prune experimental seeds and restore the snapshot; returns pruned slot ids."""
        self.rollbacks += 1
        self.divergence_streak = 0
        pruned = []
        for slot in model.slots():
            if is_active(slot.stage):
                slot.prune(f"rollback: {reason}")
                pruned.append(slot.slot_id)
        current = model.state_dict()
        with torch.no_grad():
            for name, saved in self.snapshot.items():
                if name in current:
                    current[name].copy_(saved)
        # Drop the bad epoch from the history so it does not skew divergence checks.
        if self.loss_history and not math.isfinite(self.loss_history[-1]):
            self.loss_history.pop()
        return pruned

    # ---------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        return {
            "rollbacks": self.rollbacks,
            "loss_history": list(self.loss_history),
            "divergence_streak": self.divergence_streak,
            "snapshot_epoch": self.snapshot_epoch,
            "snapshot": dict(self.snapshot),
        }

    def load_state_dict(self, state: GovernorState) -> None:
        """Restore a validated state (esper.checkpoints.run_state checks types, ranges and the snapshot)."""
        self.rollbacks = state.rollbacks
        self.loss_history = list(state.loss_history)
        self.divergence_streak = state.divergence_streak
        self.snapshot_epoch = state.snapshot_epoch
        self.snapshot = dict(state.snapshot)
