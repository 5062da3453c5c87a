"""PyTorch Lightning: `GrowthCallback` grows a LightningModule's attached model at epoch ends.

    model = esper.attach(net, slots=["layer1", "layer2"], example_input=x)   # inside your LightningModule
    trainer = Trainer(max_epochs=30, callbacks=[GrowthCallback(controller="heuristic")])

At the end of every training epoch (after validation) the callback reads the
epoch's metrics from `trainer.callback_metrics`, measures the seeds'
counterfactual contributions on held-out batches, ticks the slots, asks the
controller for one decision and carries it out. When seeds appear or go it
rebuilds the optimizers (`trainer.strategy.setup_optimizers`, which calls your
`configure_optimizers` again: build it from the module's current parameters),
carrying every surviving parameter's optimizer state over. Lifecycle metrics
go through `LightningModule.log`, so any Lightning logger records them.

Checkpoints: the seeds and their lifecycles travel in the module's own
state_dict (an attached model restores its seeds before its tensors load),
and the callback's state (epoch, signal histories, controller) in
`state_dict()` as primitives, so `trainer.fit(..., ckpt_path=...)` resumes
a grown model exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

try:
    import lightning.pytorch as pl
except ModuleNotFoundError as error:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "esper.integrations.lightning needs PyTorch Lightning, which is not installed: "
        "pip install 'esper[lightning]' (or pip install lightning)"
    ) from error

import torch
from torch import Tensor

from esper.adapters.grower import Grower, GrowthStep
from esper.control.decision import Controller
from esper.control.heuristic import HeuristicConfig
from esper.control.legality import GrowthLimits
from esper.model import MorphogeneticModel

__all__ = ["DEFAULT_METRICS", "GrowthCallback"]

# Signal name -> the metric key your LightningModule logs (None: not logged, recorded as NaN).
DEFAULT_METRICS: dict[str, str | None] = {
    "train_loss": "train_loss",
    "train_accuracy": "train_acc",
    "val_loss": "val_loss",
    "val_accuracy": "val_acc",
}


class GrowthCallback(pl.Callback):
    def __init__(
        self,
        controller: str | Controller = "heuristic",
        *,
        model_attribute: str | None = None,
        metrics: Mapping[str, str | None] | None = None,
        measure_on: tuple[Tensor, Tensor] | None = None,
        measure_batches: int = 4,
        blueprints: list[str] | None = None,
        limits: GrowthLimits | None = None,
        heuristic: HeuristicConfig | None = None,
        seed: int = 0,
    ) -> None:
        """`model_attribute`: the LightningModule attribute holding the attached model (default: the
        only MorphogeneticModel among its submodules). `metrics`: which logged keys are the signals
        (see DEFAULT_METRICS). `measure_on`: held-out (inputs, labels) for the counterfactual
        contributions; default: the first `measure_batches` (inputs, labels) batches of the
        validation dataloader."""
        super().__init__()
        unknown = sorted(set(metrics or {}) - set(DEFAULT_METRICS))
        if unknown:
            raise ValueError(f"GrowthCallback metrics: unknown signals {unknown}; signals: {sorted(DEFAULT_METRICS)}")
        if isinstance(measure_batches, bool) or not isinstance(measure_batches, int) or measure_batches < 1:
            raise ValueError(f"GrowthCallback measure_batches: expected an int >= 1, got {measure_batches!r}")
        self.controller = controller
        self.model_attribute = model_attribute
        self.metric_keys = {**DEFAULT_METRICS, **dict(metrics or {})}
        self.measure_on = measure_on
        self.measure_batches = measure_batches
        self.blueprints = blueprints
        self.limits = limits
        self.heuristic = heuristic
        self.seed = seed
        self.grower: Grower | None = None
        self.last_step: GrowthStep | None = None
        self._pending_state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ setup
    def _find_model(self, pl_module: pl.LightningModule) -> MorphogeneticModel:
        if self.model_attribute is not None:
            model = getattr(pl_module, self.model_attribute, None)
            if not isinstance(model, MorphogeneticModel):
                raise ValueError(
                    f"GrowthCallback: {type(pl_module).__name__}.{self.model_attribute} is "
                    f"{type(model).__name__}, not a model made by esper.attach"
                )
            return model
        found = [m for m in pl_module.modules() if isinstance(m, MorphogeneticModel)]
        if len(found) != 1:
            raise ValueError(
                f"GrowthCallback: expected exactly one model made by esper.attach inside "
                f"{type(pl_module).__name__}, found {len(found)}; pass model_attribute="
            )
        return found[0]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.grower is not None:
            return
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            raise ValueError(
                f"GrowthCallback: the Trainer needs max_epochs >= 1 (controllers plan by it), got {max_epochs}"
            )
        self.grower = Grower(
            self._find_model(pl_module),
            self.controller,
            max_epochs=max_epochs,
            blueprints=self.blueprints,
            limits=self.limits,
            seed=self.seed,
            heuristic=self.heuristic,
        )
        if self._pending_state is not None:
            self.grower.load_state_dict(self._pending_state)
            self._pending_state = None

    # -------------------------------------------------------------- epoch end
    def _signal(self, trainer: pl.Trainer, name: str) -> float:
        key = self.metric_keys[name]
        if key is None:
            return math.nan
        metrics = trainer.callback_metrics
        if key not in metrics:
            raise ValueError(
                f"GrowthCallback: metric {key!r} (the {name} signal) was not logged this epoch; logged: "
                f"{sorted(metrics) or 'nothing'} (log it with self.log, or map the signal with metrics=)"
            )
        return float(metrics[key])

    def _measure_data(self, trainer: pl.Trainer) -> tuple[Tensor, Tensor] | None:
        if self.measure_on is not None:
            return self.measure_on
        loaders = trainer.val_dataloaders
        if loaders is None:
            return None
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        xs, ys = [], []
        for index, batch in enumerate(loader):
            if index >= self.measure_batches:
                break
            if not (isinstance(batch, list | tuple) and len(batch) == 2 and all(isinstance(t, Tensor) for t in batch)):
                raise ValueError(
                    "GrowthCallback: validation batches are not (inputs, labels) tensor pairs; pass measure_on="
                )
            xs.append(batch[0])
            ys.append(batch[1])
        if not xs:
            return None
        self.measure_on = (torch.cat(xs), torch.cat(ys))
        return self.measure_on

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        grower = self.grower
        assert grower is not None  # setup("fit") built it
        data = self._measure_data(trainer)
        if data is not None:
            device = pl_module.device
            data = (data[0].to(device), data[1].to(device))
        step = grower.end_epoch(
            train_loss=self._signal(trainer, "train_loss"),
            train_accuracy=self._signal(trainer, "train_accuracy"),
            val_loss=self._signal(trainer, "val_loss"),
            val_accuracy=self._signal(trainer, "val_accuracy"),
            measure_on=data,
        )
        self.last_step = step
        if step.seeds_changed:
            rebuild_optimizers(trainer)
        metrics = grower.metrics()
        metrics["esper/decision_op"] = float(step.decision.op.value)
        metrics["esper/decision_executed"] = float(step.outcome.executed)
        pl_module.log_dict(metrics, on_step=False, on_epoch=True)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {} if self.grower is None else {"grower": self.grower.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if set(state_dict) != {"grower"}:
            raise ValueError(f"GrowthCallback state: expected keys ['grower'], got {sorted(state_dict)}")
        if self.grower is None:
            self._pending_state = state_dict["grower"]
        else:
            self.grower.load_state_dict(state_dict["grower"])


def rebuild_optimizers(trainer: pl.Trainer) -> None:
    """Call configure_optimizers again and carry each surviving parameter's optimizer state over."""
    old: dict[int, tuple[Tensor, Any]] = {}
    for optimizer in trainer.optimizers:
        for param, state in optimizer.state.items():
            old[id(param)] = (param, state)
    trainer.strategy.setup_optimizers(trainer)
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            for param in group["params"]:
                kept = old.get(id(param))  # a lookup of live objects, not of persisted data
                if kept is not None and kept[0] is param:
                    optimizer.state[param] = kept[1]
