"""The controller part of a run checkpoint ("controller"): one strict schema per controller kind.

The run's config names the controller ("static", "heuristic", "random" or
"policy:PATH"), which fixes what its state must hold. Types and ranges are
checked here; what needs the controller itself (the blueprint list, the
policy's LSTM size) is checked by its `load_state_dict`, also before it
changes anything, and also as a CheckpointError naming the path.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from esper.checkpoints.errors import CheckpointError, join_path
from esper.checkpoints.strict import validate
from esper.contracts.validation import FieldError

__all__ = [
    "HeuristicState",
    "PolicyState",
    "RandomState",
    "StaticState",
    "check_controller_state",
    "controller_schema",
]

# A run config's controller "policy:PATH" names a saved learned policy.
POLICY_PREFIX = "policy:"
# The controller's state sits under this key of a run checkpoint.
CONTROLLER_WHERE = "controller"

Count = Annotated[int, Field(ge=0)]
_U128 = Annotated[int, Field(ge=0, lt=2**128)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


class StaticState(_Strict):
    """The static controller keeps no state: an empty dict."""


class HeuristicState(_Strict):
    # Per blueprint (exactly the run's blueprints, checked by the controller).
    penalties: dict[str, Annotated[float, Field(ge=0.0, allow_inf_nan=False)]]
    rotation_index: Count
    last_prune_epoch: Count | None
    last_decay_epoch: Count | None
    germinations: Count
    prunes: Count
    fossilizations: Count


class Pcg64Inner(_Strict):
    state: _U128
    inc: _U128

    @model_validator(mode="after")
    def _odd_increment(self) -> Pcg64Inner:
        # PCG64 builds its increment as (seq << 1) | 1: an even one never comes out of numpy.
        if self.inc % 2 == 0:
            raise FieldError("inc", f"expected an odd int (PCG64's increment), got {self.inc}")
        return self


class Pcg64State(_Strict):
    bit_generator: Literal["PCG64"]
    state: Pcg64Inner
    has_uint32: Annotated[int, Field(ge=0, le=1)]
    uinteger: Annotated[int, Field(ge=0, lt=2**32)]


class RandomState(_Strict):
    bit_generator: Pcg64State


class PolicyState(_Strict):
    # LSTM state; the shape is the policy's (checked by PolicyController).
    h: torch.Tensor
    c: torch.Tensor
    decisions: Count

    @model_validator(mode="after")
    def _float32(self) -> PolicyState:
        for name in ("h", "c"):
            tensor = getattr(self, name)
            if tensor.dtype != torch.float32:
                raise FieldError(name, f"expected a float32 tensor, got {tensor.dtype}")
        return self


def controller_schema(spec: str) -> type[BaseModel]:
    """The schema of the state of the controller named by `spec` (a run config's `controller`)."""
    if spec.startswith(POLICY_PREFIX):
        return PolicyState
    schemas: dict[str, type[BaseModel]] = {
        "static": StaticState,
        "heuristic": HeuristicState,
        "random": RandomState,
    }
    if spec not in schemas:
        raise CheckpointError.at("config > controller", f"unknown controller {spec!r}")
    return schemas[spec]


def check_controller_state(spec: str, data: object, *, epoch: int, where: str = CONTROLLER_WHERE) -> BaseModel:
    """Validate a stored controller state for controller `spec` at run epoch `epoch`."""
    state = validate(controller_schema(spec), data, where)
    problems = []
    if isinstance(state, HeuristicState):
        for name in ("last_prune_epoch", "last_decay_epoch"):
            value = getattr(state, name)
            if value is not None and value > epoch:
                problems.append((join_path(where, name), f"expected <= {epoch} (the run's epoch), got {value}"))
    if isinstance(state, PolicyState) and state.decisions > epoch:
        # One decision per finished epoch.
        problems.append(
            (join_path(where, "decisions"), f"expected <= {epoch} (the run's epoch), got {state.decisions}")
        )
    if problems:
        raise CheckpointError.many(problems)
    return state
