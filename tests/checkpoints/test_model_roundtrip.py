"""Model checkpoints round-trip at every stage, for every blueprint and alpha algorithm.

A loaded model must give the same outputs (torch.equal) and, continued through
the same lifecycle operations as the original, stay identical to it: same
stages, alpha, seed state, parameters, requires_grad flags and outputs.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import esper
from esper.blueprints import default_registry
from esper.checkpoints import load_model, save_checkpoint, save_model
from esper.checkpoints.model_io import model_payload
from esper.checkpoints.self_test import STAGES, TINY_HOSTS, TinyHost, staged_model
from esper.checkpoints.slot_state import restore_slot
from esper.contracts.alpha import ALPHA_TARGETS, AlphaAlgorithm, AlphaCurve, AlphaMode
from esper.contracts.schema import RUN_CHECKPOINT_FORMAT, RUN_CHECKPOINT_VERSION
from esper.contracts.shapes import SlotShape
from esper.contracts.stages import SeedStage, is_active
from esper.model import MorphogeneticModel
from esper.seeds import GateConfig, LifecycleError, SeedSlot
from esper.seeds.state import SeedRecord


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny tensors: one intra-op thread is fastest and keeps timings stable on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


HOSTS = {host.label: host for host in TINY_HOSTS}


# ----------------------------------------------------------------- helpers
def snapshot(model: MorphogeneticModel) -> dict[str, Any]:
    """Everything that must survive a round trip, in comparable form."""
    return {
        "lifecycle": {slot.slot_id: slot.lifecycle_state() for slot in model.slots()},
        "stages": {slot.slot_id: slot.stage for slot in model.slots()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "gates": model.gate_config.model_dump(),
        "host": (model.host.kind, model.host.config()),
    }


def assert_same(a: MorphogeneticModel, b: MorphogeneticModel, x: torch.Tensor) -> None:
    assert snapshot(a) == snapshot(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    training = a.training
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    a.train(training), b.train(training)


def roundtrip(model: MorphogeneticModel, tmp_path: Path, name: str = "model.pt") -> MorphogeneticModel:
    path = tmp_path / name
    save_model(model, path)
    return load_model(path)


def train_step(model: MorphogeneticModel, x: torch.Tensor) -> None:
    """One SGD step on every trainable parameter (frozen ones must stay frozen)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    model(x).float().square().mean().backward()
    model.measure_gradients()
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-0.05)
    model.eval()


def lifecycle_step(model: MorphogeneticModel, step: int, blueprint: str) -> list[str]:
    """Advance every slot the natural way (refusals are part of the outcome), then tick."""
    torch.manual_seed(1000 + step)  # germination draws seed weights from the global RNG
    outcome: list[str] = []
    for slot in model.slots():
        sid = slot.slot_id
        slot.record_accuracy(0.5 + 0.01 * step)
        try:
            if slot.stage == SeedStage.DORMANT:
                model.germinate(sid, blueprint, alpha_algorithm=AlphaAlgorithm.GATE, blend_steps=3)
                outcome.append(f"{sid}: germinated")
            elif slot.stage == SeedStage.HOLDING:
                slot.record_contribution(1.5)
                outcome.append(f"{sid}: {model.fossilize(sid).passed}")
            elif is_active(slot.stage):
                outcome.append(f"{sid}: {model.advance(sid).passed}")
        except LifecycleError as error:
            outcome.append(f"{sid}: refused: {error}")
    model.step_epoch()
    return outcome


def continue_both(a: MorphogeneticModel, b: MorphogeneticModel, host: TinyHost, steps: int = 3) -> None:
    x = host.example_input(seed=7)
    blueprint = default_registry().names(host.topology)[1]  # "norm": cheap everywhere
    for step in range(steps):
        torch.manual_seed(step)
        train_step(a, x)
        torch.manual_seed(step)
        train_step(b, x)
        assert lifecycle_step(a, step, blueprint) == lifecycle_step(b, step, blueprint)
        assert_same(a, b, x)


# ------------------------------------------------------------------- tests
# A DORMANT slot holds no seed, so its checkpoint does not depend on the algorithm.
CASES = [
    pytest.param(label, stage, algorithm, id=f"{label}-{stage.name}-{algorithm.name}")
    for label in HOSTS
    for stage in STAGES
    for algorithm in AlphaAlgorithm
    if stage != SeedStage.DORMANT or algorithm is AlphaAlgorithm.ADD
]


@pytest.mark.parametrize(("host_label", "stage", "algorithm"), CASES)
def test_roundtrip_every_stage_blueprint_and_algorithm(
    host_label: str, stage: SeedStage, algorithm: AlphaAlgorithm, tmp_path: Path
) -> None:
    host = HOSTS[host_label]
    model = staged_model(host, stage, algorithm)
    assert {slot.stage for slot in model.slots()} == {stage}
    if stage == SeedStage.BLENDING:
        assert all(0.0 < slot.alpha.alpha < 1.0 for slot in model.slots())  # mid-ramp
        if algorithm is AlphaAlgorithm.GATE:
            assert all(slot.blend_gate is not None for slot in model.slots())
    loaded = roundtrip(model, tmp_path)
    assert isinstance(loaded, MorphogeneticModel)
    assert_same(model, loaded, host.example_input())
    continue_both(model, loaded, host)


@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm), ids=lambda a: a.name)
@pytest.mark.parametrize("host_label", list(HOSTS))
def test_scheduled_prune_roundtrip_keeps_the_seed_frozen(
    host_label: str, algorithm: AlphaAlgorithm, tmp_path: Path
) -> None:
    host = HOSTS[host_label]
    model = staged_model(host, SeedStage.BLENDING, algorithm)
    for sid in model.slot_ids():
        model.prune(sid, "scheduled", steps=3, curve=AlphaCurve.COSINE)
    model.step_epoch()
    loaded = roundtrip(model, tmp_path)
    for slot in loaded.slots():
        assert slot.pending_prune_reason == "scheduled"
        assert slot.alpha.mode == AlphaMode.DOWN
        assert not any(p.requires_grad for p in slot.seed_parameters())
    assert any(slot.seed_parameters() for slot in loaded.slots())
    assert_same(model, loaded, host.example_input())
    x = host.example_input(seed=3)
    for _ in range(2):  # the ramp's last two ticks: alpha reaches 0 and the prune happens
        train_step(model, x), train_step(loaded, x)
        model.step_epoch(), loaded.step_epoch()
        assert_same(model, loaded, x)
    assert {slot.stage for slot in loaded.slots()} == {SeedStage.PRUNED}


def test_partial_target_and_curves_roundtrip(tmp_path: Path) -> None:
    host = HOSTS["cnn-1d"]
    model = staged_model(host, SeedStage.HOLDING, AlphaAlgorithm.MULTIPLY)
    curves = [AlphaCurve.LINEAR, AlphaCurve.COSINE, AlphaCurve.SIGMOID]
    for index, sid in enumerate(model.slot_ids()):
        target = ALPHA_TARGETS[index % 2]  # 0.5 or 0.7: a ramp DOWN from 1
        model.set_alpha_target(sid, target, steps=5, curve=curves[index % 3], steepness=6.0)
    model.step_epoch(), model.step_epoch()
    assert all(slot.alpha.mode == AlphaMode.DOWN for slot in model.slots())
    loaded = roundtrip(model, tmp_path)
    assert_same(model, loaded, host.example_input())
    continue_both(model, loaded, host, steps=5)


def test_measured_metrics_survive(tmp_path: Path) -> None:
    host = HOSTS["cnn-2d"]
    model = staged_model(host, SeedStage.TRAINING, AlphaAlgorithm.ADD)
    x = host.example_input()
    train_step(model, x)
    for index, slot in enumerate(model.slots()):
        slot.record_accuracy(0.25 + index / 100)
        slot.record_contribution(0.5 * index)
        slot.record_contribution(0.75 * index)
    metrics = model.slot("r0c3").state.metrics  # type: ignore[union-attr]
    assert metrics.gradient_ratio is not None and metrics.contribution_velocity != 0.0
    loaded = roundtrip(model, tmp_path)
    assert loaded.slot("r0c3").state == model.slot("r0c3").state
    assert_same(model, loaded, x)


def test_load_model_reads_the_model_inside_a_run_checkpoint(tmp_path: Path) -> None:
    host = HOSTS["cnn-1d"]
    model = staged_model(host, SeedStage.HOLDING, AlphaAlgorithm.GATE)
    path = tmp_path / "run.pt"
    save_checkpoint(
        {"model": model_payload(model)},
        path,
        format=RUN_CHECKPOINT_FORMAT,
        schema_version=RUN_CHECKPOINT_VERSION,
    )
    assert_same(model, esper.load_model(path), host.example_input())


@pytest.mark.parametrize("full_host_gradient", [False, True])
def test_blend_full_host_gradient_roundtrips_and_is_stored_only_when_true(
    tmp_path: Path, full_host_gradient: bool
) -> None:
    # Left out of the stored gates while False (as in checkpoints written before the setting
    # existed); a missing key reads back as False, a stored True as True.
    host = HOSTS["cnn-1d"]
    gates = GateConfig(permissive=True, blend_full_host_gradient=full_host_gradient)
    model = MorphogeneticModel(host.build(2), gates=gates)
    assert ("blend_full_host_gradient" in model_payload(model)["gates"]) is full_host_gradient
    loaded = roundtrip(model, tmp_path)
    assert loaded.gate_config.blend_full_host_gradient is full_host_gradient
    assert_same(model, loaded, host.example_input())


def test_top_level_api_is_the_checkpoints_api() -> None:
    assert esper.save_model is save_model and esper.load_model is load_model
    assert issubclass(esper.CheckpointError, ValueError)


def test_a_refused_restore_leaves_the_slot_untouched() -> None:
    slot = SeedSlot("r0c0", SlotShape("cnn", 4, spatial_dims=1))
    slot.germinate("conv_small", alpha_algorithm=AlphaAlgorithm.GATE)
    before, seed, gate = slot.lifecycle_state(), slot.seed, slot.blend_gate
    bad = slot.lifecycle_state()
    bad["pending_prune_reason"] = "no ramp to finish"  # GERMINATED cannot have a scheduled prune
    bad["tick"] = 9
    with pytest.raises(LifecycleError, match="scheduled prune needs stage BLENDING or HOLDING"):
        slot.restore_lifecycle(bad)
    with pytest.raises(LifecycleError, match=r"expected keys \['alpha', 'pending_prune_reason'"):
        slot.restore_lifecycle({**before, "extra": 1})
    assert slot.lifecycle_state() == before
    assert slot.seed is seed and slot.blend_gate is gate


# ------------------------------------------------ seed state: hypothesis
_SHAPE = SlotShape("cnn", 4, spatial_dims=1)
_WITH_SEED = [
    SeedStage.GERMINATED,
    SeedStage.TRAINING,
    SeedStage.BLENDING,
    SeedStage.HOLDING,
    SeedStage.FOSSILIZED,
]
_WITHOUT_SEED = [SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING]
_fraction = st.floats(0.0, 1.0)
_points = st.floats(-100.0, 100.0)
_norm = st.floats(0.0, 1e6) | st.just(float("nan")) | st.just(float("inf"))
_text = st.text(max_size=12)
_FAST = GateConfig(permissive=True, g2_min_epochs=0)
_ACTIONS = ("germinate", "advance", "fossilize", "prune", "retarget", "tick", "tick", "tick", "measure")


@st.composite
def lifecycle_states(draw: st.DrawFn) -> dict[str, Any]:
    """A `SeedSlot.lifecycle_state()` the slot can reach: a random walk of its own operations.

    Only reachable states load (a checkpoint holding a state the slot cannot
    be in is refused), so the states come from driving a real slot, with
    arbitrary in-range measurements along the way.
    """
    slot = SeedSlot("r0c0", _SHAPE, gates=_FAST)
    for action in draw(st.lists(st.sampled_from(_ACTIONS), max_size=30)):
        try:
            if action == "germinate":
                slot.germinate(
                    draw(st.sampled_from(default_registry().names("cnn"))),
                    alpha_algorithm=draw(st.sampled_from(list(AlphaAlgorithm))),
                    blend_steps=draw(st.integers(0, 8)),
                    alpha_target=draw(st.sampled_from(ALPHA_TARGETS)),
                )
            elif action == "advance":
                slot.advance()
            elif action == "fossilize":
                slot.fossilize()
            elif action == "prune":
                slot.prune(draw(_text), steps=draw(st.integers(0, 8)), curve=draw(st.sampled_from(list(AlphaCurve))))
            elif action == "retarget":
                slot.set_alpha_target(
                    draw(st.sampled_from(ALPHA_TARGETS)),
                    steps=draw(st.integers(0, 8)),
                    curve=draw(st.sampled_from(list(AlphaCurve))),
                    steepness=draw(st.floats(0.5, 30.0)),
                )
            elif action == "tick":
                slot.step_epoch()
            elif slot.state is not None:
                slot.record_accuracy(draw(_fraction))
                slot.record_contribution(draw(_points))
                metrics = slot.state.metrics
                metrics.projected_contribution = draw(st.none() | _points)
                metrics.gradient_ratio = draw(st.none() | _norm)
                metrics.seed_gradient_norm = draw(st.none() | _norm)
        except LifecycleError:
            pass
    return slot.lifecycle_state()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lifecycle_states())
def test_seed_state_serialisation_roundtrip(data: dict[str, Any]) -> None:
    # Through the bytes a checkpoint would hold, read back with weights_only=True.
    buffer = io.BytesIO()
    torch.save(data, buffer)
    buffer.seek(0)
    stored = torch.load(buffer, weights_only=True)
    slot = SeedSlot("r0c0", _SHAPE)
    restore_slot(slot, stored, "seed_slots.r0c0")
    # repr: NaN gradient norms compare equal as text
    assert repr(slot.lifecycle_state()) == repr(data)
    if data["seed_state"] is not None:
        assert SeedRecord.model_validate(data["seed_state"]).model_dump() == data["seed_state"]
        stage = SeedStage(data["seed_state"]["stage"])
        assert (slot.seed is not None) == (stage in _WITH_SEED)
        expect_gate = slot.seed is not None and data["seed_state"]["alpha_algorithm"] == AlphaAlgorithm.GATE
        assert (slot.blend_gate is not None) == expect_gate
        frozen = data["pending_prune_reason"] is not None
        assert all(p.requires_grad != frozen for p in slot.seed_parameters())
