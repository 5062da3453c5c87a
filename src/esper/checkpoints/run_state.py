"""The run part of a run checkpoint ("run"): strict schema, ranges and the relations a run keeps.

`GrowthRun.state_dict()` writes it; reading goes through two checks, both
before anything is restored:

- `check_run_state` (needs only the run's config): every key and type, every
  range, the RNG states, and the relations between fields (one history entry
  per epoch, governor counters within their limits, a snapshot epoch only
  with a snapshot);
- `check_run_fits` (needs the model the run resumes with and its freshly
  built optimizers): the optimizer states against the optimizers they are
  loaded into (one seed optimizer per seed, param group keys and types,
  per-parameter state tensors of the parameter's shape and dtype), the
  governor snapshot against the model's tensors, and every slot's tick
  against the run's epoch.

Each problem is a CheckpointError line naming its path (`run > epoch:
expected int, got float`); nothing is coerced and no key has a default.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Annotated, Any, TypeGuard

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from esper.checkpoints.errors import CheckpointError, join_path
from esper.checkpoints.strict import validate
from esper.contracts.stages import SeedStage
from esper.contracts.validation import type_name

__all__ = ["RunState", "check_run_fits", "check_run_state", "cuda_generator_problems"]

Problems = list[tuple[str, str]]

# Python's random.getstate(): (version 3, 624 key words + the position, gauss or None).
_PY_RNG_VERSION = 3
_MT_WORDS = 624
_UINT32 = 2**32


def _loss(value: float) -> float:
    # Cross-entropy is >= 0; NaN marks an epoch the governor rolled back, inf a diverged one.
    if not (value >= 0.0 or math.isnan(value)):
        raise ValueError(f"expected a loss >= 0 (or NaN/inf), got {value!r}")
    return value


def _accuracy(value: float) -> float:
    if not (0.0 <= value <= 1.0 or math.isnan(value)):
        raise ValueError(f"expected an accuracy in [0, 1] (or NaN), got {value!r}")
    return value


Count = Annotated[int, Field(ge=0)]
Loss = Annotated[float, AfterValidator(_loss)]
Accuracy = Annotated[float, AfterValidator(_accuracy)]
FiniteLoss = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


class History(_Strict):
    train_loss: list[Loss]
    train_accuracy: list[Accuracy]
    val_loss: list[Loss]
    val_accuracy: list[Accuracy]


class GovernorState(_Strict):
    rollbacks: Count
    # Only finite losses are recorded (a non-finite one rolls back at once).
    loss_history: list[FiniteLoss]
    divergence_streak: Count
    # -1: no snapshot taken yet.
    snapshot_epoch: Annotated[int, Field(ge=-1)]
    snapshot: dict[str, torch.Tensor]


class OptimizerState(_Strict):
    # Parameter index (torch's numbering across the groups) -> that parameter's state.
    state: dict[int, dict[str, torch.Tensor | None]]
    # Keys and value types depend on the optimizer: checked against the live one (check_run_fits).
    param_groups: list[dict[str, Any]]


class OptimizersState(_Strict):
    host: OptimizerState
    seeds: dict[str, OptimizerState]


# Inside RngState the field `torch` hides the module.
_MaybeTensor = torch.Tensor | None


class RngState(_Strict):
    # Lists, as checkpoints hold no tuples; their entries are checked by _rng_problems.
    python: list[Any]
    numpy: list[Any]
    torch: torch.Tensor
    # The run's CUDA generator; None until the run draws on CUDA (required key since version 3).
    cuda: _MaybeTensor


class RunState(_Strict):
    """What `GrowthRun.state_dict()` stores; every key required."""

    epoch: Count
    history: History
    optimizers: OptimizersState
    governor: GovernorState
    rng: RngState


def aborted(state: RunState, max_rollbacks: int) -> bool:
    """Whether the governor stopped the run: then the last epoch ended inside its rollback, unrecorded."""
    return state.governor.rollbacks > max_rollbacks


def check_run_state(
    data: object, *, epochs: int, max_rollbacks: int, divergence_consecutive: int, where: str = "run"
) -> RunState:
    """Validate the run state against its schema and the run's config; raise one CheckpointError.

    `epochs` is the run's length (config or task default), the governor
    limits are the config's.
    """
    state = validate(RunState, data, where)
    stopped = aborted(state, max_rollbacks)
    problems = _history_problems(state, stopped, where)
    problems += _governor_problems(state, max_rollbacks, divergence_consecutive, join_path(where, "governor"))
    problems += _rng_problems(state.rng, join_path(where, "rng"))
    if state.epoch > epochs:
        problems.append((join_path(where, "epoch"), f"expected <= {epochs} (the run's epochs), got {state.epoch}"))
    if problems:
        raise CheckpointError.many(problems)
    return state


def _history_problems(state: RunState, stopped: bool, where: str) -> Problems:
    # One entry per finished epoch; an aborted run's last epoch has none.
    recorded = {state.epoch - 1, state.epoch} if stopped else {state.epoch}
    wording = f"{state.epoch} values (one per epoch)" + (f" or {state.epoch - 1} (aborted run)" if stopped else "")
    problems = []
    for name in History.model_fields:
        values = getattr(state.history, name)
        if len(values) not in recorded:
            problems.append((join_path(where, "history", name), f"expected {wording}, got {len(values)}"))
    lengths = {len(getattr(state.history, name)) for name in History.model_fields}
    if not problems and len(lengths) > 1:
        problems.append((join_path(where, "history"), f"lists of different lengths {sorted(lengths)}"))
    return problems


def _governor_problems(state: RunState, max_rollbacks: int, consecutive: int, where: str) -> Problems:
    governor = state.governor
    problems = []
    if governor.rollbacks > max_rollbacks + 1:
        # The run stops at the first rollback past the limit.
        problems.append(
            (join_path(where, "rollbacks"), f"expected <= {max_rollbacks + 1} (limit + 1), got {governor.rollbacks}")
        )
    if len(governor.loss_history) > state.epoch:
        problems.append(
            (
                join_path(where, "loss_history"),
                f"expected at most {state.epoch} losses (one per epoch), got {len(governor.loss_history)}",
            )
        )
    if governor.divergence_streak >= consecutive:
        problems.append(
            (
                join_path(where, "divergence_streak"),
                f"expected < {consecutive} (a streak that long rolls back and resets), "
                f"got {governor.divergence_streak}",
            )
        )
    if governor.snapshot_epoch > state.epoch:
        problems.append(
            (
                join_path(where, "snapshot_epoch"),
                f"expected <= {state.epoch} (the run's epoch), got {governor.snapshot_epoch}",
            )
        )
    if (governor.snapshot_epoch < 0) != (not governor.snapshot):
        wording = (
            "snapshot_epoch -1 (none taken) needs an empty snapshot"
            if governor.snapshot_epoch < 0
            else (f"snapshot_epoch {governor.snapshot_epoch} needs the snapshot's tensors, got none")
        )
        problems.append((join_path(where, "snapshot"), wording))
    return problems


# ---------------------------------------------------------------- RNG states
def _is_int(value: object) -> TypeGuard[int]:
    return type(value) is int


def _rng_problems(rng: RngState, where: str) -> Problems:
    return (
        _python_rng_problems(rng.python, join_path(where, "python"))
        + _numpy_rng_problems(rng.numpy, join_path(where, "numpy"))
        + torch_generator_problems(rng.torch, join_path(where, "torch"))
        + (cuda_generator_problems(rng.cuda, join_path(where, "cuda")) if rng.cuda is not None else [])
    )


def _python_rng_problems(python: list[Any], where: str) -> Problems:
    if len(python) != 3:
        return [(where, f"expected [version, state, gauss] (3 items), got {len(python)} items")]
    version, words, gauss = python
    problems = []
    if not _is_int(version) or version != _PY_RNG_VERSION:
        problems.append((join_path(where, 0), f"expected {_PY_RNG_VERSION} (the state version), got {version!r}"))
    if type(words) is not list or len(words) != _MT_WORDS + 1:
        length = len(words) if type(words) is list else type_name(words)
        problems.append((join_path(where, 1), f"expected a list of {_MT_WORDS + 1} ints, got {length}"))
    else:
        problems += _words_problems(words[:-1], join_path(where, 1))
        position = words[-1]
        if not _is_int(position) or not 0 <= position <= _MT_WORDS:
            problems.append(
                (join_path(where, 1, _MT_WORDS), f"expected a position in [0, {_MT_WORDS}], got {position!r}")
            )
    if gauss is not None and (type(gauss) is not float or not math.isfinite(gauss)):
        problems.append((join_path(where, 2), f"expected a finite float or None, got {gauss!r}"))
    if not problems:
        try:
            random.Random().setstate((version, tuple(words), gauss))
        except (ValueError, TypeError, OverflowError) as error:
            problems.append((where, f"not a valid Python random state: {error}"))
    return problems


def _words_problems(words: Iterable[object], where: str) -> Problems:
    for index, word in enumerate(words):
        if not _is_int(word) or not 0 <= word < _UINT32:
            return [(join_path(where, index), f"expected an int in [0, 2**32), got {word!r}")]
    return []


def _numpy_rng_problems(state: list[Any], where: str) -> Problems:
    if len(state) != 5:
        return [(where, f"expected [name, key, pos, has_gauss, gauss] (5 items), got {len(state)} items")]
    name, key, pos, has_gauss, gauss = state
    problems = []
    if name != "MT19937" or type(name) is not str:
        problems.append((join_path(where, 0), f"expected 'MT19937', got {name!r}"))
    if not isinstance(key, torch.Tensor) or key.dtype != torch.int64 or tuple(key.shape) != (_MT_WORDS,):
        found = f"dtype {key.dtype}, shape {tuple(key.shape)}" if isinstance(key, torch.Tensor) else type_name(key)
        problems.append((join_path(where, 1), f"expected an int64 tensor of shape ({_MT_WORDS},), got {found}"))
    elif bool(((key < 0) | (key >= _UINT32)).any()):
        problems.append((join_path(where, 1), "expected key words in [0, 2**32)"))
    if not _is_int(pos) or not 0 <= pos <= _MT_WORDS:
        problems.append((join_path(where, 2), f"expected an int in [0, {_MT_WORDS}], got {pos!r}"))
    if not _is_int(has_gauss) or has_gauss not in (0, 1):
        problems.append((join_path(where, 3), f"expected 0 or 1, got {has_gauss!r}"))
    if type(gauss) is not float or not math.isfinite(gauss):
        problems.append((join_path(where, 4), f"expected a finite float, got {gauss!r}"))
    if not problems:
        try:
            np.random.RandomState().set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
        except (ValueError, TypeError) as error:
            problems.append((where, f"not a valid numpy random state: {error}"))
    return problems


def torch_generator_problems(state: torch.Tensor, where: str) -> Problems:
    """Problems of a stored torch generator state (the CPU generator's layout; tried on a scratch one)."""
    expected = torch.Generator().get_state()  # the layout of a CPU generator state
    if state.dtype != expected.dtype or state.shape != expected.shape:
        return [
            (
                where,
                f"expected a {expected.dtype} tensor of shape {tuple(expected.shape)}, "
                f"got {state.dtype} of shape {tuple(state.shape)}",
            )
        ]
    try:
        torch.Generator().set_state(state)
    except RuntimeError as error:
        return [(where, f"not a valid torch generator state: {str(error).splitlines()[0]}")]
    return []


# A CUDA (Philox) generator's state: its seed and its offset, 8 bytes each.
_CUDA_STATE_BYTES = 16


def cuda_generator_problems(state: torch.Tensor, where: str) -> Problems:
    """Problems of a stored CUDA generator state: 16 bytes (seed, offset), the offset >= 0 and a multiple of 4.

    Checked by layout rather than on a scratch CUDA generator, so a checkpoint
    written on a GPU machine validates (and resumes) on one without CUDA.
    """
    if state.dtype != torch.uint8 or tuple(state.shape) != (_CUDA_STATE_BYTES,):
        return [
            (
                where,
                f"expected a torch.uint8 tensor of shape ({_CUDA_STATE_BYTES},), "
                f"got {state.dtype} of shape {tuple(state.shape)}",
            )
        ]
    offset = int.from_bytes(bytes(state[8:].tolist()), "little", signed=True)
    # torch's CUDA generator refuses any other offset when the state is set.
    if offset < 0 or offset % 4 != 0:
        return [(where, f"expected a generator offset >= 0 and a multiple of 4, got {offset}")]
    return []


# ------------------------------------------------------- against the model
def check_run_fits(
    state: RunState,
    *,
    model: Any,
    host_optimizer: torch.optim.Optimizer,
    seed_optimizers: dict[str, torch.optim.Optimizer],
    max_rollbacks: int,
    where: str = "run",
    model_where: str = "model",
) -> None:
    """Check a validated run state against the model it resumes and that model's fresh optimizers.

    `model` is the MorphogeneticModel (restored from the same checkpoint);
    the optimizers are the ones the state will be loaded into.
    """
    optimizers_where = join_path(where, "optimizers")
    problems = optimizer_problems(state.optimizers.host, host_optimizer, join_path(optimizers_where, "host"))
    seeds_where = join_path(optimizers_where, "seeds")
    for slot_id in sorted(set(seed_optimizers) - set(state.optimizers.seeds)):
        problems.append((join_path(seeds_where, slot_id), "missing required key (the slot holds a seed)"))
    for slot_id in sorted(set(state.optimizers.seeds) - set(seed_optimizers)):
        problems.append((join_path(seeds_where, slot_id), "unknown key (no seed in that slot)"))
    for slot_id in sorted(set(seed_optimizers) & set(state.optimizers.seeds)):
        problems += optimizer_problems(
            state.optimizers.seeds[slot_id], seed_optimizers[slot_id], join_path(seeds_where, slot_id)
        )
    problems += _snapshot_problems(state.governor.snapshot, model, join_path(where, "governor", "snapshot"))
    # One step_epoch per epoch; an aborted run stopped before its last one.
    ticks = {state.epoch - 1, state.epoch} if aborted(state, max_rollbacks) else {state.epoch}
    for slot in model.slots():
        if slot.tick not in ticks:
            problems.append(
                (
                    join_path(model_where, f"seed_slots.{slot.slot_id}", "tick"),
                    f"expected {state.epoch} (the run's epoch), got {slot.tick}",
                )
            )
    if problems:
        raise CheckpointError.many(problems)


def _snapshot_problems(snapshot: dict[str, torch.Tensor], model: Any, where: str) -> Problems:
    """The snapshot holds every host tensor and the tensors of fossilized seeds only."""
    if not snapshot:
        return []
    current = model.state_dict()
    fossils = tuple(f"seed_slots.{s.slot_id}." for s in model.slots() if s.stage == SeedStage.FOSSILIZED)
    problems = []
    for name in current:
        if name.startswith("host.") and name not in snapshot:
            problems.append((join_path(where, name), "missing required key (every host tensor is snapshotted)"))
    for name, tensor in snapshot.items():
        if name not in current or not (name.startswith("host.") or name.startswith(fossils)):
            problems.append((join_path(where, name), "unknown key (not a host or fossilized seed tensor)"))
            continue
        want = current[name]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            problems.append(
                (
                    join_path(where, name),
                    f"expected tensor of shape {tuple(want.shape)} and dtype {want.dtype}, "
                    f"got shape {tuple(tensor.shape)} and dtype {tensor.dtype}",
                )
            )
    return problems


# --------------------------------------------------------------- optimizers
def _per_parameter_keys(optimizer: torch.optim.Optimizer) -> frozenset[str]:
    if isinstance(optimizer, torch.optim.AdamW | torch.optim.Adam):
        keys = {"step", "exp_avg", "exp_avg_sq"}
        if optimizer.defaults.get("amsgrad"):
            keys.add("max_exp_avg_sq")
        return frozenset(keys)
    if isinstance(optimizer, torch.optim.SGD):
        return frozenset({"momentum_buffer"})
    raise TypeError(f"no checkpoint schema for optimizer {type(optimizer).__name__}")


def _number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]  # `type() in` is not narrowed


def optimizer_problems(saved: OptimizerState, optimizer: torch.optim.Optimizer, where: str) -> Problems:
    """A stored optimizer state against the live optimizer it will be loaded into.

    Param groups: the live group's keys; flags (bool/None: foreach, fused,
    maximize...) equal to the live ones, as the optimizer is always built the
    same way; hyperparameters finite numbers >= 0 (betas in [0, 1)); `params`
    the live group's parameter indices. Per-parameter state: for an index of
    the optimizer, exactly the optimizer's state keys, each a tensor of the
    parameter's shape and dtype ("step" a non-negative scalar).
    """
    live = optimizer.state_dict()["param_groups"]
    groups_where = join_path(where, "param_groups")
    if len(saved.param_groups) != len(live):
        return [(groups_where, f"expected {len(live)} param groups, got {len(saved.param_groups)}")]
    problems: Problems = []
    for index, (group, fresh) in enumerate(zip(saved.param_groups, live, strict=True)):
        problems += _group_problems(group, fresh, join_path(groups_where, index))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    keys = _per_parameter_keys(optimizer)
    for index, entry in saved.state.items():
        at = join_path(where, "state", str(index))
        if not 0 <= index < len(params):
            problems.append((at, f"unknown key (the optimizer has parameters 0..{len(params) - 1})"))
            continue
        problems += _parameter_state_problems(entry, params[index], keys, at)
    return problems


def _group_problems(group: dict[str, Any], fresh: dict[str, Any], where: str) -> Problems:
    problems = [(join_path(where, key), "missing required key") for key in fresh if key not in group]
    problems += [(join_path(where, str(key)), "unknown key") for key in group if key not in fresh]
    for key, want in fresh.items():
        if key not in group:
            continue
        value, at = group[key], join_path(where, key)
        if key == "params":
            if type(value) is not list or not all(_is_int(i) for i in value) or value != want:
                problems.append((at, f"expected the optimizer's parameter indices {want}, got {value!r:.80}"))
        elif want is None or type(want) is bool:
            if type(value) is not type(want) or value != want:
                problems.append((at, f"expected {want!r} (how the run builds its optimizers), got {value!r:.80}"))
        elif isinstance(want, tuple):
            if (
                type(value) is not list
                or len(value) != len(want)
                or not all(_number(v) and 0.0 <= v < 1.0 for v in value)
            ):
                problems.append((at, f"expected a list of {len(want)} numbers in [0, 1), got {value!r:.80}"))
        elif _number(want):
            if not _number(value) or value < 0:
                problems.append((at, f"expected a finite number >= 0, got {value!r:.80}"))
        else:
            problems.append((at, f"no checkpoint schema for a {type(want).__name__} hyperparameter"))
    return problems


def _parameter_state_problems(
    entry: dict[str, torch.Tensor | None], param: torch.Tensor, keys: frozenset[str], where: str
) -> Problems:
    problems = [(join_path(where, key), "missing required key") for key in sorted(keys - set(entry))]
    problems += [(join_path(where, key), "unknown key") for key in sorted(set(entry) - keys)]
    for key in sorted(keys & set(entry)):
        value, at = entry[key], join_path(where, key)
        if key == "step":
            if value is None or value.dtype != torch.float32 or value.dim() != 0:
                problems.append((at, f"expected a float32 scalar tensor, got {_describe(value)}"))
            elif not (math.isfinite(float(value)) and float(value) >= 0 and float(value) == int(value)):
                problems.append((at, f"expected a whole number of steps >= 0, got {float(value)!r}"))
            continue
        if value is None:
            if key != "momentum_buffer":
                problems.append((at, "expected a tensor, got None"))
            continue
        if value.shape != param.shape or value.dtype != param.dtype:
            problems.append(
                (
                    at,
                    f"expected tensor of shape {tuple(param.shape)} and dtype {param.dtype} (its parameter's), "
                    f"got {_describe(value)}",
                )
            )
        elif key in ("exp_avg_sq", "max_exp_avg_sq") and bool((value < 0).any()):
            problems.append((at, "expected values >= 0 (a running mean of squares)"))
    return problems


def _describe(value: torch.Tensor | None) -> str:
    if value is None:
        return "None"
    return f"shape {tuple(value.shape)} and dtype {value.dtype}"
