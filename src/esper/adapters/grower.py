"""Grower: the once-per-epoch growth step for a training loop you wrote yourself.

    grower = Grower(model, "heuristic", max_epochs=20)
    for epoch in range(20):
        ... your training and validation ...
        step = grower.end_epoch(train_loss=..., train_accuracy=..., val_loss=..., val_accuracy=...,
                                measure_on=(x_val, y_val))
        if step.seeds_changed:
            ... rebuild the optimizers from model.host_parameters() / model.seed_parameter_groups() ...

`end_epoch` is the growth step Esper's own trainer takes after an epoch, from
the same functions (esper.training.growth_step), in the same order: measure
each seed's counterfactual contribution on the held-out data (one fused pass),
record it and the validation accuracy in the slots, tick the slots (alpha
ramps, embargoes), ask the controller for one decision (under torchrun, rank
0's on every rank) and carry it out (refusing what is illegal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from esper.contracts.stages import SeedStage
from esper.control.decision import Controller, Decision, EpochSignals
from esper.control.execute import Outcome, execute
from esper.control.heuristic import HeuristicConfig
from esper.control.legality import GrowthLimits, live_seed_count
from esper.control.registry import build_controller
from esper.model import MorphogeneticModel
from esper.training.growth_step import decide, end_epoch, measure_contributions

_HISTORY_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
# Blueprints a default Grower never proposes: "noop" grows parameters that do nothing.
_EXCLUDED_BY_DEFAULT = frozenset({"noop"})


@dataclass(frozen=True)
class GrowthStep:
    """What one `end_epoch` did."""

    epoch: int
    decision: Decision
    outcome: Outcome
    # The set of slots holding seed parameters changed (a seed appeared or went): rebuild optimizers.
    seeds_changed: bool
    contributions: dict[str, float]
    stages: dict[str, str]


def default_blueprints(model: MorphogeneticModel) -> list[str]:
    """Every registered blueprint for the model's slot topologies, except those that grow nothing useful."""
    names: list[str] = []
    for slot in model.slots():
        for name in slot.registry.names(slot.shape.topology):
            if name not in names and name not in _EXCLUDED_BY_DEFAULT:
                names.append(name)
    return names


def _finite_number(name: str, value: object) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"end_epoch {name}: expected a number, got {type(value).__name__}")
    return float(value)


class Grower:
    def __init__(
        self,
        model: MorphogeneticModel,
        controller: str | Controller = "heuristic",
        *,
        max_epochs: int,
        blueprints: list[str] | None = None,
        limits: GrowthLimits | None = None,
        seed: int = 0,
        heuristic: HeuristicConfig | None = None,
        batch_size: int = 256,
    ) -> None:
        """`controller`: a name ("heuristic", "random", "static", "policy:PATH") or a Controller.

        `limits` default: one seed per slot, seeds adding at most as many
        parameters as the host has. `batch_size`: of the counterfactual pass.
        """
        if not isinstance(model, MorphogeneticModel):
            raise TypeError(f"Grower: model must be a MorphogeneticModel (esper.attach), got {type(model).__name__}")
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
            raise ValueError(f"Grower max_epochs: expected an int >= 1, got {max_epochs!r}")
        self.model = model
        self.max_epochs = max_epochs
        self.blueprints = list(blueprints) if blueprints is not None else default_blueprints(model)
        self.limits = (
            limits
            if limits is not None
            else GrowthLimits(max_seeds=len(model.slot_ids()), max_added_params=model.param_counts().host)
        )
        if isinstance(controller, str):
            controller = build_controller(
                controller, blueprints=self.blueprints, limits=self.limits, seed=seed, heuristic=heuristic
            )
        elif not isinstance(controller, Controller):
            raise TypeError(f"Grower controller: expected a name or a Controller, got {type(controller).__name__}")
        self.controller: Controller = controller
        self.batch_size = batch_size
        self.epoch = 0
        self.history: dict[str, list[float]] = {key: [] for key in _HISTORY_KEYS}

    def _device(self) -> torch.device:
        return next(self.model.host.parameters()).device

    def end_epoch(
        self,
        *,
        train_loss: float,
        train_accuracy: float,
        val_loss: float,
        val_accuracy: float,
        measure_on: tuple[Tensor, Tensor] | None = None,
    ) -> GrowthStep:
        """Record one finished epoch, tick the slots, decide and carry out one lifecycle action.

        Accuracies are fractions. `measure_on`: held-out (inputs, class labels)
        for the counterfactual contributions; without it seeds are never
        measured, so no seed passes the fossilization gate.
        """
        values = {
            "train_loss": _finite_number("train_loss", train_loss),
            "train_accuracy": _finite_number("train_accuracy", train_accuracy),
            "val_loss": _finite_number("val_loss", val_loss),
            "val_accuracy": _finite_number("val_accuracy", val_accuracy),
        }
        measured = None
        if measure_on is not None:
            if not (isinstance(measure_on, tuple) and len(measure_on) == 2):
                raise ValueError("end_epoch measure_on: expected a tuple (inputs, labels)")
            measured = measure_contributions(self.model, TensorDataset(*measure_on), self.batch_size, self._device())
        end_epoch(self.model, val_accuracy=values["val_accuracy"], measured=measured)
        self.epoch += 1
        for key, value in values.items():
            self.history[key].append(value)
        before = set(self.model.seed_parameter_groups())
        decision = decide(self.controller, self.signals(), self.model)
        outcome = execute(self.model, decision, self.blueprints, self.limits)
        after = set(self.model.seed_parameter_groups())
        stages = {s.slot_id: s.stage.name for s in self.model.slots()}
        contributions = dict(measured.contributions) if measured is not None else {}
        return GrowthStep(self.epoch, decision, outcome, before != after, contributions, stages)

    def signals(self) -> EpochSignals:
        counts = self.model.param_counts()
        return EpochSignals.from_history(
            epoch=self.epoch,
            max_epochs=self.max_epochs,
            history=self.history,
            host_params=counts.host,
            seed_params=counts.seeds,
        )

    def metrics(self) -> dict[str, float]:
        """Lifecycle numbers for a logger: parameter counts, live seeds, each slot's stage, alpha and contribution."""
        counts = self.model.param_counts()
        out: dict[str, float] = {
            "esper/host_params": float(counts.host),
            "esper/seed_params": float(counts.seeds),
            "esper/live_seeds": float(live_seed_count(self.model)),
        }
        for report in self.model.reports().values():
            out[f"esper/{report.slot}/stage"] = float(SeedStage[report.stage].value)
            out[f"esper/{report.slot}/alpha"] = report.alpha
            if report.contribution is not None and math.isfinite(report.contribution):
                out[f"esper/{report.slot}/contribution"] = report.contribution
        return out

    # --------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Primitives only: the epoch count, the signal histories and the controller's own state."""
        return {
            "epoch": self.epoch,
            "history": {k: list(v) for k, v in self.history.items()},
            "controller": self.controller.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = {"epoch", "history", "controller"}
        if not isinstance(state, dict) or set(state) != expected:
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"Grower state: expected keys {sorted(expected)}, got {found}")
        epoch, history = state["epoch"], state["history"]
        if type(epoch) is not int or epoch < 0:
            raise ValueError(f"Grower state epoch: expected an int >= 0, got {epoch!r}")
        if not isinstance(history, dict) or set(history) != set(_HISTORY_KEYS):
            raise ValueError(f"Grower state history: expected keys {sorted(_HISTORY_KEYS)}, got {history!r:.80}")
        for key, values in history.items():
            if not isinstance(values, list) or len(values) != epoch or not all(
                isinstance(v, float) for v in values
            ):
                raise ValueError(f"Grower state history.{key}: expected {epoch} floats, got {values!r:.80}")
        self.controller.load_state_dict(state["controller"])
        self.epoch = epoch
        self.history = {k: list(v) for k, v in history.items()}

