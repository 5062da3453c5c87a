"""Strict reading of model checkpoints: every defect raises one CheckpointError naming its path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import esper
from esper.checkpoints import CheckpointError, load_model, save_checkpoint, save_model
from esper.checkpoints.model_io import model_from_payload, model_payload
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.schema import AGENT_CHECKPOINT_FORMAT, AGENT_CHECKPOINT_VERSION, MODEL_CHECKPOINT_VERSION
from esper.hosts import build_host
from esper.model import MorphogeneticModel
from esper.seeds import GateConfig


def small_model() -> MorphogeneticModel:
    """Two CNN slots; r0c1 holds a GATE seed in TRAINING, r0c0 is DORMANT."""
    torch.manual_seed(0)
    host = build_host("cnn", {"in_channels": 1, "num_classes": 3, "widths": [4, 4], "spatial_dims": 1})
    model = MorphogeneticModel(host, gates=GateConfig(permissive=True))
    model.germinate("r0c1", "conv_small", alpha_algorithm=AlphaAlgorithm.GATE)
    model.advance("r0c1")
    return model


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    save_model(small_model(), path)
    return path


def tamper(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a checkpoint with `edit` applied to its raw contents (bypassing every check)."""
    data = torch.load(path, weights_only=True)
    edit(data)
    torch.save(data, path)


def load_error(path: Path) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(path) in str(info.value)  # every error names the file
    return info.value


def test_the_error_type_is_a_value_error() -> None:
    assert issubclass(CheckpointError, ValueError)
    assert esper.CheckpointError is CheckpointError


def test_wrong_type_names_the_exact_path(saved: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["seed_slots"]["r0c1"]["seed_state"]["metrics"]["counterfactual_contribution"] = "1.5"

    tamper(saved, edit)
    error = load_error(saved)
    expected = (
        "seed_slots.r0c1 > seed_state > metrics > counterfactual_contribution: "
        "expected float or None, got str"
    )
    assert error.problems == (expected,)
    assert str(error) == f"checkpoint {saved}: {error.problems[0]}"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["seed_slots"]["r0c1"].pop("tick"), "seed_slots.r0c1 > tick: missing required key"),
        (
            lambda d: d["seed_slots"]["r0c1"]["seed_state"]["metrics"].pop("gradient_ratio"),
            "seed_slots.r0c1 > seed_state > metrics > gradient_ratio: missing required key",
        ),
        (
            lambda d: d["seed_slots"]["r0c1"]["seed_state"].pop("prune_reason"),
            "seed_slots.r0c1 > seed_state > prune_reason: missing required key",
        ),
        (
            lambda d: d["seed_slots"]["r0c1"]["seed_state"]["history"][0].pop("reason"),
            "seed_slots.r0c1 > seed_state > history > [0] > reason: missing required key",
        ),
        (
            lambda d: d["seed_slots"]["r0c0"]["alpha"].pop("mode"),
            "seed_slots.r0c0 > alpha > mode: missing required key",
        ),
        (lambda d: d["gates"].pop("g2_min_epochs"), "gates > g2_min_epochs: missing required key"),
        (lambda d: d.pop("gates"), "gates: missing required key"),
        (lambda d: d["host"].pop("config"), "host > config: missing required key"),
        (lambda d: d["seed_slots"].pop("r0c0"), "seed_slots.r0c0: missing required key"),
    ],
)
def test_missing_keys(saved: Path, edit: Callable[[dict[str, Any]], None], expected: str) -> None:
    tamper(saved, edit)
    assert load_error(saved).problems == (expected,)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(extra=1), "extra: unknown key"),
        (
            lambda d: d["seed_slots"]["r0c1"].update(isolate_gradients=True),
            "seed_slots.r0c1 > isolate_gradients: unknown key",
        ),
        (
            lambda d: d["seed_slots"]["r0c1"]["seed_state"]["metrics"].update(_prev_contribution=None),
            "seed_slots.r0c1 > seed_state > metrics > _prev_contribution: unknown key",
        ),
        (lambda d: d["gates"].update(g4_min_epochs=1), "gates > g4_min_epochs: unknown key"),
    ],
)
def test_unknown_keys(saved: Path, edit: Callable[[dict[str, Any]], None], expected: str) -> None:
    tamper(saved, edit)
    (problem,) = load_error(saved).problems
    assert problem.startswith(f"{expected} (valid keys: "), problem


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: d["seed_slots"]["r0c1"].update(tick=1.0),
            "seed_slots.r0c1 > tick: expected int, got float",
        ),
        (
            lambda d: d["seed_slots"]["r0c1"].update(tick=True),
            "seed_slots.r0c1 > tick: expected int, got bool",
        ),
        (
            lambda d: d["seed_slots"]["r0c1"]["seed_state"].update(stage="TRAINING"),
            "seed_slots.r0c1 > seed_state > stage: expected int (SeedStage value), got str",
        ),
        (lambda d: d["slots"].append(7), "slots > [2]: expected str, got int"),
        (lambda d: d["state_dict"].update(junk="x"), "state_dict > junk: expected Tensor, got str"),
    ],
)
def test_wrong_types(saved: Path, edit: Callable[[dict[str, Any]], None], expected: str) -> None:
    tamper(saved, edit)
    assert load_error(saved).problems == (expected,)


def test_several_problems_are_reported_together(saved: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["seed_slots"]["r0c1"]["seed_state"]["metrics"]["current_accuracy"] = "high"
        data["seed_slots"]["r0c1"]["seed_state"]["blend_steps"] = None

    tamper(saved, edit)
    problems = load_error(saved).problems
    assert len(problems) == 2
    assert any(p.startswith("seed_slots.r0c1 > seed_state > metrics > current_accuracy:") for p in problems)
    assert any(p.startswith("seed_slots.r0c1 > seed_state > blend_steps:") for p in problems)


@pytest.mark.parametrize(
    ("edit", "where", "words"),
    [
        (
            lambda d: d["seed_slots"]["r0c1"]["seed_state"].update(stage=5),
            "seed_slots.r0c1 > seed_state > stage",
            "expected one of",
        ),
        (
            lambda d: d["seed_slots"]["r0c1"]["seed_state"].update(blueprint="conv_huge"),
            "seed_slots.r0c1 > seed_state > blueprint",
            "unknown cnn blueprint 'conv_huge'",
        ),
        (
            lambda d: d["seed_slots"]["r0c1"].update(pending_prune_reason="late"),
            "seed_slots.r0c1",
            "scheduled prune needs stage BLENDING or HOLDING",
        ),
        (
            lambda d: d["seed_slots"]["r0c1"]["alpha"].update(alpha=1.5),
            "seed_slots.r0c1 > alpha > alpha",
            "expected a value <= 1",
        ),
        (lambda d: d["host"].update(kind="resnet"), "host > kind", "unknown host kind 'resnet'"),
        (lambda d: d["host"]["config"].update(widths="4"), "host > config > widths", "expected list[int], got str"),
        (lambda d: d["slots"].append("r9c9"), "slots", "r9c9"),
    ],
)
def test_inconsistent_content(
    saved: Path, edit: Callable[[dict[str, Any]], None], where: str, words: str
) -> None:
    tamper(saved, edit)
    (problem,) = load_error(saved).problems
    assert problem.startswith(f"{where}: ") and words in problem, problem


def test_an_inconsistent_alpha_ramp_is_refused_at_its_path(saved: Path) -> None:
    tamper(saved, lambda d: d["seed_slots"]["r0c1"]["alpha"].update(steps_done=3))
    (problem,) = load_error(saved).problems
    assert problem.startswith("seed_slots.r0c1 > alpha: ")


def test_state_dict_mismatches_name_the_tensors(saved: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        weights = data["state_dict"]
        del weights["seed_slots.r0c1.blend_gate.out.bias"]
        weights["seed_slots.r0c0.seed.weight"] = torch.zeros(1)
        weights["host.classifier.weight"] = torch.zeros(2, 2)

    tamper(saved, edit)
    problems = load_error(saved).problems
    assert problems == (
        "state_dict > seed_slots.r0c1.blend_gate.out.bias: missing required key",
        "state_dict > seed_slots.r0c0.seed.weight: unknown key (the rebuilt model has no such tensor)",
        "state_dict > host.classifier.weight: expected tensor of shape (3, 4) and dtype torch.float32, "
        "got shape (2, 2) and dtype torch.float32",
    )


def test_unknown_schema_version(saved: Path) -> None:
    tamper(saved, lambda d: d.update(schema_version=MODEL_CHECKPOINT_VERSION + 1))
    (problem,) = load_error(saved).problems
    assert problem.startswith("schema_version: ") and f"version {MODEL_CHECKPOINT_VERSION + 1}" in problem


def test_wrong_format(tmp_path: Path) -> None:
    path = tmp_path / "agent.pt"
    save_checkpoint(
        {"weights": {}}, path, format=AGENT_CHECKPOINT_FORMAT, schema_version=AGENT_CHECKPOINT_VERSION
    )
    assert load_error(path).problems == ("format: expected format 'esper.model', got 'esper.agent'",)


def test_truncated_file(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    (problem,) = load_error(saved).problems
    assert "not loadable with torch.load(weights_only=True)" in problem


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 4)
    assert "not loadable" in load_error(garbage).problems[0]
    missing = tmp_path / "missing.pt"
    assert "no such file" in load_error(missing).problems[0]


def test_a_pickled_object_is_refused_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # what the reference wrote: a module
    assert "weights_only" in load_error(path).problems[0]


def test_run_checkpoint_errors_are_prefixed_with_model() -> None:
    payload = model_payload(small_model())
    payload["seed_slots"]["r0c1"]["seed_state"]["metrics"]["counterfactual_contribution"] = "1.5"
    with pytest.raises(CheckpointError) as info:
        model_from_payload(payload, "model")
    assert info.value.problems == (
        "model > seed_slots.r0c1 > seed_state > metrics > counterfactual_contribution: "
        "expected float or None, got str",
    )


def test_a_failing_save_leaves_the_existing_file_intact(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = saved.read_bytes()
    model = small_model()
    # A host config that is not primitives (a set): the writer must refuse it before touching the file.
    monkeypatch.setattr(type(model.host), "config", lambda self: {"widths": {4}})
    with pytest.raises(CheckpointError, match=r"host > config > widths: expected .* got set"):
        save_model(model, saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]  # no temp file left behind
    assert load_model(saved).slot("r0c1").stage.name == "TRAINING"


def test_saving_refuses_an_unregistered_host_class(tmp_path: Path) -> None:
    model = small_model()
    subclass = type("MyHost", (type(model.host),), {})
    model.host.__class__ = subclass
    with pytest.raises(
        CheckpointError, match=r"host > kind: host class MyHost is not registered as kind 'cnn'"
    ):
        save_model(model, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
