"""The learned controller's observation: a fixed, named, versioned feature vector.

One vector per decision: training signals first, then one block per slot in
row-major slot order. Every feature, its meaning and its scaling is listed in
docs/observations.md (one table). Values that were never measured are 0 with
an explicit "measured" flag beside them, never a guess.

The layout depends on the slot ids and the blueprint list, and its
`signature()` hashes the version and every feature name: an agent checkpoint
records it, so a policy trained on another layout refuses to load.
Bump OBSERVATION_LAYOUT_VERSION whenever a feature's meaning or scaling changes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from esper.contracts.actions import Op
from esper.contracts.alpha import AlphaAlgorithm, AlphaMode
from esper.contracts.stages import SLOT_STAGES, SeedStage, is_active
from esper.control.decision import EpochSignals
from esper.control.legality import GrowthLimits, live_seed_count, slot_allows
from esper.model import MorphogeneticModel
from esper.seeds.slot import SeedSlot
from esper.telemetry import events as ev

OBSERVATION_LAYOUT_VERSION = 1
HISTORY_LENGTH = 5
LOSS_CLIP = 10.0
PLATEAU_MIN_GAIN = 0.005  # a val-accuracy gain below 0.5 pt continues a plateau
PLATEAU_CAP = 10
STAGE_EPOCHS_CAP = 20
POINTS_SCALE = 10.0  # accuracy points are divided by this
POINTS_CLIP = 10.0  # ... and then clipped to +-this
GRADIENT_CLIP = 5.0
TEMPO_SCALE = 8.0

# Stages a slot can be in (UNKNOWN never appears on a slot; 5 is reserved).
OBSERVED_STAGES: tuple[SeedStage, ...] = SLOT_STAGES

Interactions = Mapping[str, Mapping[str, float]]


def _base_names() -> list[str]:
    names = [
        "epoch_progress",
        "train_loss",
        "train_loss_measured",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "best_val_accuracy",
        "train_loss_delta",
        "val_loss_delta",
        "val_accuracy_delta",
    ]
    names += [f"val_accuracy_lag{i}" for i in range(1, HISTORY_LENGTH + 1)]
    names += [f"val_loss_lag{i}" for i in range(1, HISTORY_LENGTH + 1)]
    names += [
        "history_available",
        "plateau_epochs",
        "param_growth",
        "budget_used",
        "live_seeds",
        "active_seeds",
        "fossilized_seeds",
    ]
    return names


@dataclass(frozen=True)
class ObservationLayout:
    """Feature names and positions for one slot layout and blueprint list."""

    slot_ids: tuple[str, ...]
    blueprints: tuple[str, ...]
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.slot_ids or len(set(self.slot_ids)) != len(self.slot_ids):
            raise ValueError(f"ObservationLayout.slot_ids: expected unique slot ids, got {self.slot_ids!r}")
        if not self.blueprints or len(set(self.blueprints)) != len(self.blueprints):
            raise ValueError(f"ObservationLayout.blueprints: expected unique names, got {self.blueprints!r}")
        names = _base_names()
        for slot_id in self.slot_ids:
            names += [f"{slot_id}.{name}" for name in self.slot_feature_names(slot_id)]
        object.__setattr__(self, "names", tuple(names))

    def slot_feature_names(self, slot_id: str) -> list[str]:
        names = [f"stage_{stage.name}" for stage in OBSERVED_STAGES]
        names += ["epochs_in_stage", "seed_age", "alpha", "alpha_target"]
        names += [f"alpha_mode_{mode.name}" for mode in AlphaMode]
        names += ["alpha_progress"]
        names += [f"algorithm_{algorithm.name}" for algorithm in AlphaAlgorithm]
        names += ["tempo", "pending_prune"]
        names += ["contribution_measured", "contribution", "contribution_velocity"]
        names += ["improvement_measured", "improvement", "total_improvement_measured", "total_improvement"]
        names += ["gradient_measured", "gradient_ratio"]
        names += [f"blueprint_{name}" for name in self.blueprints]
        names += ["seed_params", "can_advance", "can_fossilize", "interactions_measured"]
        names += [f"interaction_{other}" for other in self.slot_ids if other != slot_id]
        return names

    @property
    def dim(self) -> int:
        return len(self.names)

    def signature(self) -> str:
        """A short hash of the layout version and every feature name, in order."""
        text = f"v{OBSERVATION_LAYOUT_VERSION}\n" + "\n".join(self.names)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def describe(self) -> dict[str, object]:
        """Primitives recorded in agent checkpoints."""
        return {"version": OBSERVATION_LAYOUT_VERSION, "signature": self.signature(), "dim": self.dim}


def layout_signature(slot_ids: Sequence[str], blueprints: Sequence[str]) -> str:
    return ObservationLayout(tuple(slot_ids), tuple(blueprints)).signature()


class InteractionTracker:
    """Keeps the pairwise interactions of the latest counterfactual measurement.

    GrowthRun reports them only through ContributionMeasured events, so the
    environment (and the policy controller) feed every event to `observe`.
    """

    def __init__(self) -> None:
        self.epoch = -1
        self.values: dict[str, dict[str, float]] = {}

    def observe(self, event: ev.TelemetryEvent) -> None:
        if not isinstance(event, ev.ContributionMeasured):
            return
        if event.epoch != self.epoch:
            self.epoch, self.values = event.epoch, {}
        self.values[event.slot] = dict(event.interactions)

    def for_epoch(self, epoch: int) -> dict[str, dict[str, float]]:
        """Interactions measured at `epoch` (empty when none were)."""
        return {k: dict(v) for k, v in self.values.items()} if epoch == self.epoch else {}

    def reset(self) -> None:
        self.epoch, self.values = -1, {}


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def _loss(value: float) -> float:
    # A non-finite validation loss means "enormous": it takes the clip value.
    return _clip(value, 0.0, LOSS_CLIP) if math.isfinite(value) else LOSS_CLIP


def _points(value: float) -> float:
    return _clip(value / POINTS_SCALE, -POINTS_CLIP, POINTS_CLIP)


def _lag(history: Sequence[float], lag: int, transform: Callable[[float], float]) -> float:
    """The value `lag` epochs before the latest, transformed; 0 before the run started."""
    return float(transform(history[-1 - lag])) if len(history) > lag else 0.0


def plateau_length(val_accuracy_history: Sequence[float]) -> int:
    """Consecutive latest epochs whose val-accuracy gain over the epoch before was < 0.5 pt."""
    count = 0
    for index in range(len(val_accuracy_history) - 1, 0, -1):
        if val_accuracy_history[index] - val_accuracy_history[index - 1] >= PLATEAU_MIN_GAIN:
            break
        count += 1
    return count


def _base_features(
    signals: EpochSignals, model: MorphogeneticModel, limits: GrowthLimits, n_slots: int
) -> list[float]:
    val_acc = signals.val_accuracy_history or (signals.val_accuracy,)
    val_loss = signals.val_loss_history or (signals.val_loss,)
    train_loss = signals.train_loss_history or (signals.train_loss,)
    train_measured = math.isfinite(signals.train_loss)
    previous_train = train_loss[-2] if len(train_loss) > 1 else math.nan
    train_delta = signals.train_loss - previous_train
    stages = [slot.stage for slot in model.slots()]
    features = [
        signals.epoch / signals.max_epochs,
        _loss(signals.train_loss) if train_measured else 0.0,
        float(train_measured),
        signals.train_accuracy if math.isfinite(signals.train_accuracy) else 0.0,
        _loss(signals.val_loss),
        signals.val_accuracy,
        max(val_acc),
        _clip(train_delta, -LOSS_CLIP, LOSS_CLIP) if math.isfinite(train_delta) else 0.0,
        _loss(val_loss[-1]) - _loss(val_loss[-2]) if len(val_loss) > 1 else 0.0,
        10.0 * (val_acc[-1] - val_acc[-2]) if len(val_acc) > 1 else 0.0,
    ]
    features += [_lag(val_acc, lag, float) for lag in range(1, HISTORY_LENGTH + 1)]
    features += [_lag(val_loss, lag, _loss) for lag in range(1, HISTORY_LENGTH + 1)]
    features += [
        min(len(val_acc) - 1, HISTORY_LENGTH) / HISTORY_LENGTH,
        min(plateau_length(val_acc), PLATEAU_CAP) / PLATEAU_CAP,
        signals.seed_params / signals.host_params if signals.host_params else 0.0,
        signals.seed_params / limits.max_added_params if limits.max_added_params else 0.0,
        live_seed_count(model) / limits.max_seeds if limits.max_seeds else 0.0,
        sum(is_active(s) for s in stages) / n_slots,
        sum(s == SeedStage.FOSSILIZED for s in stages) / n_slots,
    ]
    return features


def _slot_features(
    layout: ObservationLayout,
    slot: SeedSlot,
    model: MorphogeneticModel,
    signals: EpochSignals,
    limits: GrowthLimits,
    interactions: Mapping[str, float],
) -> list[float]:
    state = slot.state
    alpha = slot.alpha
    features = [float(slot.stage == stage) for stage in OBSERVED_STAGES]
    metrics = None if state is None else state.metrics
    features += [
        0.0 if metrics is None else min(metrics.epochs_in_stage, STAGE_EPOCHS_CAP) / STAGE_EPOCHS_CAP,
        0.0 if metrics is None else metrics.epochs_total / signals.max_epochs,
        alpha.alpha,
        alpha.target,
    ]
    features += [float(alpha.mode == mode) for mode in AlphaMode]
    ramping = alpha.mode != AlphaMode.HOLD and alpha.steps_total > 0
    features.append(alpha.steps_done / alpha.steps_total if ramping else 1.0)
    features += [float(state is not None and state.alpha_algorithm == a) for a in AlphaAlgorithm]
    features += [
        0.0 if alpha.blend is None else alpha.blend.steps / TEMPO_SCALE,
        float(slot.pending_prune_reason is not None),
    ]
    contribution = None if metrics is None else metrics.counterfactual_contribution
    improvement = None if metrics is None else metrics.improvement_points()
    total = None if metrics is None else metrics.total_improvement_points()
    ratio = None if metrics is None else metrics.gradient_ratio
    features += [
        float(contribution is not None),
        0.0 if contribution is None else _points(contribution),
        0.0 if contribution is None or metrics is None else _points(metrics.contribution_velocity),
        float(improvement is not None),
        0.0 if improvement is None else _points(improvement),
        float(total is not None),
        0.0 if total is None else _points(total),
        float(ratio is not None),
        0.0 if ratio is None else _clip(math.log1p(ratio), 0.0, GRADIENT_CLIP),
    ]
    blueprint = None if state is None else state.blueprint
    features += [float(blueprint == name) for name in layout.blueprints]
    blueprints = list(layout.blueprints)
    features += [
        slot.seed_param_count() / signals.host_params if signals.host_params else 0.0,
        float(slot_allows(model, slot.slot_id, Op.ADVANCE, blueprints, limits)),
        float(slot_allows(model, slot.slot_id, Op.FOSSILIZE, blueprints, limits)),
        float(bool(interactions)),
    ]
    others = [other for other in layout.slot_ids if other != slot.slot_id]
    unknown = sorted(set(interactions) - set(others))
    if unknown:
        raise ValueError(f"interactions of {slot.slot_id}: unknown other slots {unknown}; slots are {others}")
    # Interactions are reported for every measured pair, so a missing pair was not measured: 0.
    features += [_points(interactions[other]) if other in interactions else 0.0 for other in others]
    return features


def build_observation(
    layout: ObservationLayout,
    signals: EpochSignals,
    model: MorphogeneticModel,
    limits: GrowthLimits,
    interactions: Interactions,
) -> Tensor:
    """The raw (unnormalised) observation, float32 of shape (layout.dim,)."""
    if tuple(model.slot_ids()) != layout.slot_ids:
        raise ValueError(
            f"observation: the model's slots {model.slot_ids()} differ from the layout's {list(layout.slot_ids)}"
        )
    unknown = sorted(set(interactions) - set(layout.slot_ids))
    if unknown:
        raise ValueError(f"observation: interactions name unknown slots {unknown}")
    # A slot absent from `interactions` had none measured this epoch.
    per_slot: dict[str, Mapping[str, float]] = {sid: {} for sid in layout.slot_ids}
    per_slot.update(interactions)
    features = _base_features(signals, model, limits, len(layout.slot_ids))
    for slot in model.slots():
        features += _slot_features(layout, slot, model, signals, limits, per_slot[slot.slot_id])
    if len(features) != layout.dim:
        raise AssertionError(f"observation: built {len(features)} features, layout has {layout.dim}")
    out = torch.tensor(features, dtype=torch.float32)
    if not bool(torch.isfinite(out).all()):
        bad = [layout.names[i] for i in torch.nonzero(~torch.isfinite(out)).flatten().tolist()]
        raise ValueError(f"observation: non-finite features {bad[:8]}")
    return out
