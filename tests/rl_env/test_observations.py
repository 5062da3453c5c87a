"""Observation layout, features, honesty about unmeasured values, and the one documentation table."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from esper.control.decision import EpochSignals
from esper.control.legality import GrowthLimits
from esper.growth_rl import observations as obs_module
from esper.growth_rl.observations import (
    HISTORY_LENGTH,
    InteractionTracker,
    ObservationLayout,
    build_observation,
    layout_signature,
    plateau_length,
)
from esper.hosts import CNNHost, CNNHostConfig
from esper.model import MorphogeneticModel
from esper.seeds.gates import GateConfig
from esper.telemetry import events as ev

BLUEPRINTS = ("conv_light", "norm", "attention")
LIMITS = GrowthLimits(max_seeds=2, max_added_params=1000)
DOC = Path(__file__).resolve().parents[2] / "docs" / "observations.md"


def model() -> MorphogeneticModel:
    torch.manual_seed(0)
    host = CNNHost(CNNHostConfig(in_channels=1, num_classes=3, widths=[4, 4, 4], spatial_dims=1))
    return MorphogeneticModel(host, gates=GateConfig(permissive=True))


def signals(m: MorphogeneticModel, accuracies: list[float], train_loss: float = 1.0) -> EpochSignals:
    counts = m.param_counts()
    losses = [2.0 - a for a in accuracies]
    return EpochSignals(
        epoch=len(accuracies), max_epochs=10, train_loss=train_loss, train_accuracy=0.5,
        val_loss=losses[-1], val_accuracy=accuracies[-1], host_params=counts.host, seed_params=counts.seeds,
        val_loss_history=tuple(losses), val_accuracy_history=tuple(accuracies),
        train_loss_history=tuple([1.2] * (len(accuracies) - 1) + [train_loss]),
    )


def features(layout: ObservationLayout, vector: torch.Tensor) -> dict[str, float]:
    return dict(zip(layout.names, vector.tolist(), strict=True))


def test_layout_names_are_unique_and_signature_tracks_the_layout() -> None:
    m = model()
    layout = ObservationLayout(tuple(m.slot_ids()), BLUEPRINTS)
    assert len(set(layout.names)) == layout.dim
    n, b = len(m.slot_ids()), len(BLUEPRINTS)
    assert layout.dim == 27 + n * (35 + b + n - 1)  # the formula docs/observations.md states
    assert layout.signature() == layout_signature(m.slot_ids(), BLUEPRINTS)
    assert layout.signature() != layout_signature(m.slot_ids(), BLUEPRINTS[:2])
    assert layout.signature() != layout_signature(["r0c0", "r0c1"], BLUEPRINTS)
    assert layout.describe() == {"version": obs_module.OBSERVATION_LAYOUT_VERSION, "signature": layout.signature(),
                                 "dim": layout.dim}
    vector = build_observation(layout, signals(m, [0.3]), m, LIMITS, {})
    assert vector.shape == (layout.dim,) and vector.dtype == torch.float32
    with pytest.raises(ValueError, match="unique"):
        ObservationLayout(("r0c0", "r0c0"), BLUEPRINTS)


def test_signature_changes_with_the_layout_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = layout_signature(["r0c0"], BLUEPRINTS)
    monkeypatch.setattr(obs_module, "OBSERVATION_LAYOUT_VERSION", obs_module.OBSERVATION_LAYOUT_VERSION + 1)
    assert layout_signature(["r0c0"], BLUEPRINTS) != before


def test_unmeasured_values_are_zero_with_a_flag_and_measured_ones_are_scaled() -> None:
    m = model()
    layout = ObservationLayout(tuple(m.slot_ids()), BLUEPRINTS)
    m.germinate("r0c0", "norm")
    f = features(layout, build_observation(layout, signals(m, [0.3, 0.31]), m, LIMITS, {}))
    assert f["r0c0.stage_GERMINATED"] == 1.0 and f["r0c0.blueprint_norm"] == 1.0
    assert f["r0c0.contribution_measured"] == 0.0 and f["r0c0.contribution"] == 0.0
    assert f["r0c0.gradient_measured"] == 0.0 and f["r0c0.gradient_ratio"] == 0.0
    assert f["r0c1.stage_DORMANT"] == 1.0 and f["r0c1.blueprint_norm"] == 0.0
    assert f["r0c0.can_advance"] == 1.0 and f["r0c0.can_fossilize"] == 0.0
    slot = m.slot("r0c0")
    assert slot.state is not None
    slot.record_contribution(4.0)
    slot.record_contribution(6.0)
    slot.state.metrics.gradient_ratio = 0.5
    f = features(layout, build_observation(layout, signals(m, [0.3, 0.31]), m, LIMITS, {}))
    assert f["r0c0.contribution_measured"] == 1.0 and f["r0c0.contribution"] == pytest.approx(0.6)
    assert f["r0c0.contribution_velocity"] == pytest.approx(0.3 * 2.0 / 10.0)
    assert f["r0c0.gradient_measured"] == 1.0 and f["r0c0.gradient_ratio"] == pytest.approx(math.log1p(0.5))
    assert f["live_seeds"] == pytest.approx(0.5) and f["active_seeds"] == pytest.approx(1 / 3)


def test_training_signals_histories_and_rollback_epochs() -> None:
    m = model()
    layout = ObservationLayout(tuple(m.slot_ids()), BLUEPRINTS)
    accuracies = [0.2, 0.3, 0.4, 0.402, 0.401, 0.403, 0.404]
    f = features(layout, build_observation(layout, signals(m, accuracies), m, LIMITS, {}))
    assert f["epoch_progress"] == pytest.approx(0.7)
    assert f["val_accuracy"] == pytest.approx(0.404) and f["best_val_accuracy"] == pytest.approx(0.404)
    assert f["val_accuracy_delta"] == pytest.approx(10 * 0.001)
    assert [f[f"val_accuracy_lag{i}"] for i in range(1, HISTORY_LENGTH + 1)] == pytest.approx(
        [0.403, 0.401, 0.402, 0.4, 0.3]
    )
    assert f["history_available"] == 1.0
    assert f["plateau_epochs"] == pytest.approx(0.4)  # four epochs below +0.5 pt
    early = features(layout, build_observation(layout, signals(m, [0.2]), m, LIMITS, {}))
    assert early["val_accuracy_lag1"] == 0.0 and early["history_available"] == 0.0
    rolled_back = features(layout, build_observation(layout, signals(m, [0.2, 0.3], math.nan), m, LIMITS, {}))
    assert rolled_back["train_loss_measured"] == 0.0 and rolled_back["train_loss"] == 0.0
    assert rolled_back["train_loss_delta"] == 0.0


def test_plateau_length() -> None:
    assert plateau_length([0.5]) == 0
    assert plateau_length([0.1, 0.2, 0.3]) == 0
    assert plateau_length([0.1, 0.3, 0.3, 0.302]) == 2
    assert plateau_length([0.5, 0.4, 0.3]) == 2


def test_interactions_come_from_the_latest_counterfactual_events() -> None:
    m = model()
    layout = ObservationLayout(tuple(m.slot_ids()), BLUEPRINTS)
    tracker = InteractionTracker()
    for slot, other in (("r0c0", "r0c1"), ("r0c1", "r0c0")):
        tracker.observe(ev.ContributionMeasured(epoch=4, slot=slot, contribution=1.0, velocity=0.0,
                                                interactions={other: -2.5}))
    tracker.observe(ev.RewardComputed(epoch=4, total=0.0, components={}))  # ignored
    assert tracker.for_epoch(3) == {}
    f = features(layout, build_observation(layout, signals(m, [0.3] * 4), m, LIMITS, tracker.for_epoch(4)))
    assert f["r0c0.interactions_measured"] == 1.0 and f["r0c0.interaction_r0c1"] == pytest.approx(-0.25)
    assert f["r0c1.interaction_r0c0"] == pytest.approx(-0.25) and f["r0c2.interactions_measured"] == 0.0
    tracker.observe(ev.ContributionMeasured(epoch=5, slot="r0c0", contribution=1.0, velocity=0.0))
    assert tracker.for_epoch(5) == {"r0c0": {}}
    with pytest.raises(ValueError, match="unknown other slots"):
        build_observation(layout, signals(m, [0.3]), m, LIMITS, {"r0c0": {"r9c9": 1.0}})


def test_every_feature_is_documented_in_one_table() -> None:
    """docs/observations.md has one table whose rows name every feature (slot features as `<slot>.name`)."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Observations", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE))
    layout = ObservationLayout(("r0c0", "r0c1"), ("conv_light", "norm"))
    expected = set()
    for name in layout.names:
        _, dot, feature = name.partition(".")
        if not dot:
            expected.add(name)
            continue
        feature = re.sub(r"^blueprint_.+$", "blueprint_<name>", feature)
        feature = re.sub(r"^interaction_.+$", "interaction_<other slot>", feature)
        expected.add(f"<slot>.{feature}")
    assert expected <= documented, sorted(expected - documented)
    assert documented <= expected, sorted(documented - expected)
    assert f"OBSERVATION_LAYOUT_VERSION = {obs_module.OBSERVATION_LAYOUT_VERSION}" in text
