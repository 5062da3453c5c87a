"""Export: a static module with the fossilized seeds baked in, safetensors files, the CLI."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from esper.checkpoints import CheckpointError, export_static, save_checkpoint, save_model
from esper.checkpoints.export import FixedBlend, StaticGrownModel, export_safetensors, load_exported
from esper.checkpoints.model_io import model_payload
from esper.checkpoints.self_test import TINY_HOSTS, perturb_seeds, staged_model
from esper.cli import export_cmd
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.schema import RUN_CHECKPOINT_FORMAT, RUN_CHECKPOINT_VERSION
from esper.contracts.stages import SeedStage
from esper.hosts import build_host
from esper.model import MorphogeneticModel
from esper.seeds import GateConfig, SeedSlot
from esper.seeds.alpha_controller import AlphaController

HOSTS = {host.label: host for host in TINY_HOSTS}
ALGORITHMS = list(AlphaAlgorithm)


def outputs(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return module(x)


def mixed_model() -> MorphogeneticModel:
    """Four CNN slots: FOSSILIZED (GATE), HOLDING, TRAINING and pruned (EMBARGOED)."""
    torch.manual_seed(0)
    host = build_host(
        "cnn", {"in_channels": 1, "num_classes": 3, "widths": [4, 4, 4, 4], "spatial_dims": 1, "pool": False}
    )
    model = MorphogeneticModel(host, gates=GateConfig(permissive=True))
    model.germinate("r0c0", "conv_light", alpha_algorithm=AlphaAlgorithm.GATE, blend_steps=2)
    model.germinate("r0c1", "depthwise", blend_steps=2)
    perturb_seeds(model, seed=1)
    for sid in ("r0c0", "r0c1"):
        model.advance(sid)
    for _ in range(3):
        model.step_epoch()
    for sid in ("r0c0", "r0c1"):
        model.advance(sid)
    model.step_epoch(), model.step_epoch()
    for sid in ("r0c0", "r0c1"):
        model.advance(sid)
    model.slot("r0c0").record_contribution(1.0)
    model.fossilize("r0c0")
    model.germinate("r0c2", "attention")
    perturb_seeds(model, seed=2)
    model.advance("r0c2")
    model.germinate("r0c3", "norm")
    model.prune("r0c3", "bad")
    model.step_epoch()
    stages = {sid: model.slot(sid).stage for sid in model.slot_ids()}
    assert stages == {
        "r0c0": SeedStage.FOSSILIZED,
        "r0c1": SeedStage.HOLDING,
        "r0c2": SeedStage.TRAINING,
        "r0c3": SeedStage.EMBARGOED,
    }
    return model


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
@pytest.mark.parametrize("host_label", list(HOSTS))
def test_export_matches_the_model_exactly(host_label: str, algorithm: AlphaAlgorithm) -> None:
    host = HOSTS[host_label]
    model = staged_model(host, SeedStage.FOSSILIZED, algorithm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every seed is fossilized: nothing is left out
        static = export_static(model)
    assert isinstance(static, StaticGrownModel)
    assert list(static.blends) == model.slot_ids()
    x = host.example_input()
    expected = outputs(model, x)
    assert not torch.equal(expected, outputs(model.host, x))  # the seeds do change the output
    assert torch.equal(outputs(static, x), expected)
    # No lifecycle machinery survives the export.
    assert not any(isinstance(m, SeedSlot) for m in static.modules())
    assert not any(isinstance(v, AlphaController) for m in static.modules() for v in vars(m).values())


def test_export_is_independent_of_the_model() -> None:
    host = HOSTS["cnn-2d"]
    model = staged_model(host, SeedStage.FOSSILIZED, AlphaAlgorithm.MULTIPLY)
    static = export_static(model)
    x = host.example_input()
    before = outputs(static, x)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert torch.equal(outputs(static, x), before)
    model_ids = {id(p) for p in model.parameters()}
    assert not any(id(p) in model_ids for p in static.parameters())


def test_static_model_needs_a_host_with_slots() -> None:
    with pytest.raises(TypeError, match="host must implement HostProtocol, got Linear"):
        StaticGrownModel(torch.nn.Linear(2, 2), {})


def test_fixed_blends_are_the_baked_in_seeds() -> None:
    static = export_static(staged_model(HOSTS["cnn-2d"], SeedStage.FOSSILIZED, AlphaAlgorithm.MULTIPLY))
    blends = static.fixed_blends()
    assert blends and list(blends) == list(static.blends)
    assert all(isinstance(blend, FixedBlend) and blend is static.blends[sid] for sid, blend in blends.items())


def test_non_fossilized_seeds_are_left_out_with_a_warning() -> None:
    model = mixed_model()
    with pytest.warns(UserWarning) as caught:
        static = export_static(model)
    messages = sorted(str(w.message) for w in caught)
    assert messages == [
        "export: slot r0c1 left out: its seed is HOLDING, not FOSSILIZED",
        "export: slot r0c2 left out: its seed is TRAINING, not FOSSILIZED",
    ]
    assert list(static.blends) == ["r0c0"]
    blend = static.blends["r0c0"]
    assert isinstance(blend, FixedBlend) and blend.algorithm is AlphaAlgorithm.GATE and blend.gate is not None
    # Without the HOLDING seed the model's output is reproduced once that seed is ablated.
    x = torch.randn(2, 1, 6, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad(), model.slot("r0c1").force_alpha(0.0):
        expected = model(x)
    assert torch.equal(outputs(static, x), expected)


@pytest.mark.parametrize("host_label", list(HOSTS))
def test_safetensors_roundtrip(host_label: str, tmp_path: Path) -> None:
    host = HOSTS[host_label]
    model = staged_model(host, SeedStage.FOSSILIZED, AlphaAlgorithm.GATE)
    path = tmp_path / "grown.safetensors"
    static = export_safetensors(model, path)
    loaded = load_exported(path)
    x = host.example_input()
    assert torch.equal(outputs(loaded, x), outputs(model, x))
    assert torch.equal(outputs(loaded, x), outputs(static, x))
    assert [(sid, b.blueprint, b.algorithm) for sid, b in loaded.blends.items()] == [
        (sid, b.blueprint, b.algorithm) for sid, b in static.blends.items()
    ]
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["esper"])
        names = set(handle.keys())
    assert meta["host_kind"] == host.kind and meta["host_config"] == model.host.config()
    assert set(meta["seeds"]) == set(model.slot_ids())
    assert names | set(meta["aliases"]) == set(static.state_dict())


def test_tied_gpt_weights_are_stored_once_and_tied_again(tmp_path: Path) -> None:
    model = staged_model(HOSTS["gpt"], SeedStage.FOSSILIZED, AlphaAlgorithm.ADD)
    assert model.host.lm_head.weight is model.host.token_embedding.weight
    path = tmp_path / "gpt.safetensors"
    export_safetensors(model, path)
    with safe_open(str(path), framework="pt") as handle:
        names = set(handle.keys())
        aliases = json.loads(handle.metadata()["esper"])["aliases"]
    assert ("host.lm_head.weight" in names) != ("host.token_embedding.weight" in names)
    assert len(aliases) == 1
    loaded = load_exported(path)
    assert loaded.host.lm_head.weight is loaded.host.token_embedding.weight
    x = HOSTS["gpt"].example_input()
    assert torch.equal(outputs(loaded, x), outputs(model, x))


def test_load_exported_refuses_bad_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read safetensors file"):
        load_exported(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match=r"metadata > esper: missing required key"):
        load_exported(foreign)
    model = staged_model(HOSTS["cnn-1d"], SeedStage.FOSSILIZED, AlphaAlgorithm.ADD)
    good = tmp_path / "good.safetensors"
    export_safetensors(model, good)
    with safe_open(str(good), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
        meta = json.loads(handle.metadata()["esper"])
    meta["seeds"]["r0c1"]["blueprint"] = "conv_huge"
    meta["seeds"]["r0c2"]["alpha"] = "1"
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"esper": json.dumps(meta)})
    with pytest.raises(CheckpointError) as info:
        load_exported(bad)
    assert info.value.problems == ("metadata > esper > seeds > r0c2 > alpha: expected float, got str",)
    meta["seeds"]["r0c2"]["alpha"] = 1.0
    save_file(tensors, str(bad), metadata={"esper": json.dumps(meta)})
    with pytest.raises(CheckpointError, match=r"metadata > esper > seeds > r0c1: .*conv_huge"):
        load_exported(bad)


# --------------------------------------------------------------------- CLI
def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="esper")
    export_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_exports_a_model_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = mixed_model()
    checkpoint = tmp_path / "model.pt"
    save_model(model, checkpoint)
    out = tmp_path / "grown.safetensors"
    assert run_cli(["export", str(checkpoint), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "seed r0c0: conv_light (GATE, alpha 1.0)" in captured.out
    assert "r0c1 left out: its seed is HOLDING" in captured.err
    assert "r0c2 left out: its seed is TRAINING" in captured.err
    assert list(load_exported(out).blends) == ["r0c0"]


def test_cli_accepts_a_run_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = staged_model(HOSTS["cnn-1d"], SeedStage.FOSSILIZED, AlphaAlgorithm.ADD)
    run = tmp_path / "run.pt"
    save_checkpoint(
        {"model": model_payload(model)},
        run,
        format=RUN_CHECKPOINT_FORMAT,
        schema_version=RUN_CHECKPOINT_VERSION,
    )
    out = tmp_path / "grown.safetensors"
    assert run_cli(["export", str(run), "--out", str(out)]) == 0
    x = HOSTS["cnn-1d"].example_input()
    assert torch.equal(outputs(load_exported(out), x), outputs(model, x))
    assert capsys.readouterr().err == ""


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.safetensors"
    assert run_cli(["export", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.pt"
    save_model(mixed_model(), broken)
    data = torch.load(broken, weights_only=True)
    data["seed_slots"]["r0c0"]["tick"] = "3"
    torch.save(data, broken)
    assert run_cli(["export", str(broken), "--out", str(out)]) == 2
    assert "seed_slots.r0c0 > tick: expected int, got str" in capsys.readouterr().err
    assert run_cli(["export", str(broken), "--out", str(tmp_path / "no-dir" / "x.safetensors")]) == 2
    assert not out.exists()
