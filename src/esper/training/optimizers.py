"""The host optimizer plus one optimizer per seed, created at germination and
dropped at prune; gradient clipping separately for the host and each seed."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from esper.checkpoints.run_state import OptimizersState, OptimizerState
from esper.model import MorphogeneticModel


def _make(
    kind: Literal["sgd", "adamw"], params: list[nn.Parameter], lr: float, momentum: float | None, weight_decay: float
) -> torch.optim.Optimizer:
    if kind == "sgd":
        if momentum is None:
            raise ValueError("optimizer momentum: expected a float for sgd, got None")
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


class OptimizerSet:
    def __init__(
        self,
        model: MorphogeneticModel,
        *,
        kind: Literal["sgd", "adamw"],
        host_lr: float,
        seed_lr: float,
        momentum: float | None,
        weight_decay: float,
        grad_clip: float,
    ) -> None:
        self.model = model
        self.kind = kind
        self.host_lr = host_lr
        self.seed_lr = seed_lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.host = _make(kind, model.host_parameters(), host_lr, momentum, weight_decay)
        self.seeds: dict[str, torch.optim.Optimizer] = {}
        self.sync_with_model()

    def sync_with_model(self) -> None:
        """Create optimizers for new seeds, drop those of pruned ones."""
        groups = self.model.seed_parameter_groups()
        for slot_id in list(self.seeds):
            if slot_id not in groups:
                del self.seeds[slot_id]
        for slot_id, params in groups.items():
            if slot_id not in self.seeds:
                # Momentum only for SGD: seeds train like the host, SGD(lr, momentum 0.9), without weight decay.
                self.seeds[slot_id] = _make(self.kind, params, self.seed_lr, self.momentum, 0.0)

    def zero_grad(self) -> None:
        self.model.zero_grad(set_to_none=True)

    def step(self) -> None:
        nn.utils.clip_grad_norm_(self.model.host_parameters(), self.grad_clip)
        self.host.step()
        for slot_id, optimizer in self.seeds.items():
            params = [p for p in self.model.slot(slot_id).seed_parameters() if p.requires_grad]
            if params:
                nn.utils.clip_grad_norm_(params, self.grad_clip)
                optimizer.step()

    def reset_state(self) -> None:
        """Forget momentum etc. (after a rollback the old state points the wrong way)."""
        self.host = _make(
            self.kind, self.model.host_parameters(), self.host_lr, self.momentum, self.weight_decay
        )
        self.seeds = {}
        self.sync_with_model()

    def state_dict(self) -> dict[str, Any]:
        """Primitives only (checkpoints hold no tuples): see `_group_to_primitives`."""
        return {
            "host": _state_to_primitives(self.host.state_dict()),
            "seeds": {k: _state_to_primitives(o.state_dict()) for k, o in self.seeds.items()},
        }

    def load_state_dict(self, state: OptimizersState) -> None:
        """Restore a validated state: esper.checkpoints.run_state has checked it against these optimizers."""
        self.host.load_state_dict(_state_from_primitives(state.host, self.host))
        for slot_id, optimizer in self.seeds.items():
            optimizer.load_state_dict(_state_from_primitives(state.seeds[slot_id], optimizer))


def _state_to_primitives(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer's state_dict with its tuple hyperparameters (AdamW's `betas`) as lists.

    Only param-group values are tuples in torch's optimizers; per-parameter state is
    tensors and numbers. `_state_from_primitives` turns them back, so a save/load
    round trip gives the optimizer exactly the types it had.
    """
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return {"state": state["state"], "param_groups": groups}


def _state_from_primitives(state: OptimizerState, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Inverse of `_state_to_primitives`: the live optimizer's tuple fields become tuples again."""
    groups = []
    for saved, live in zip(state.param_groups, optimizer.param_groups, strict=True):
        groups.append({k: tuple(v) if isinstance(live[k], tuple) else v for k, v in saved.items()})
    return {"state": dict(state.state), "param_groups": groups}
