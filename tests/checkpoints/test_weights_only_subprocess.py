"""Every checkpoint we write loads with torch.load(weights_only=True) in a fresh interpreter.

The loading happens in a new `python -c` process that imports nothing from
esper, so no class registered by our code can make the load succeed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from enum import IntEnum
from pathlib import Path

import torch

from esper.checkpoints import save_checkpoint, save_model
from esper.checkpoints.model_io import model_payload
from esper.checkpoints.self_test import STAGES, TINY_HOSTS, staged_model
from esper.contracts.alpha import AlphaAlgorithm, AlphaCurve
from esper.contracts.schema import RUN_CHECKPOINT_FORMAT, RUN_CHECKPOINT_VERSION
from esper.contracts.stages import SeedStage

# Loads each file given on the command line; prints {path: null or the error}.
_LOADER = """
import json, sys, torch
results = {}
for path in sys.argv[1:]:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        results[path] = None
    except Exception as exc:  # report any failure, the test decides
        results[path] = f"{type(exc).__name__}: {exc}"[:300]
print(json.dumps(results))
assert "esper" not in sys.modules
"""


class _Colour(IntEnum):
    RED = 1


def load_in_fresh_process(paths: list[Path]) -> dict[str, str | None]:
    completed = subprocess.run(
        [sys.executable, "-c", _LOADER, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(completed.stdout)


def write_all(directory: Path) -> list[Path]:
    paths: list[Path] = []
    for host in TINY_HOSTS:
        for stage in STAGES:
            for algorithm in AlphaAlgorithm:
                model = staged_model(host, stage, algorithm)
                path = directory / f"{host.label}-{stage.name}-{algorithm.name}.pt"
                save_model(model, path)
                paths.append(path)
        # A scheduled prune mid-ramp (frozen seed, alpha ramping down) ...
        model = staged_model(host, SeedStage.BLENDING, AlphaAlgorithm.GATE)
        for sid in model.slot_ids():
            model.prune(sid, "scheduled", steps=4, curve=AlphaCurve.SIGMOID)
        model.step_epoch()
        path = directory / f"{host.label}-scheduled-prune.pt"
        save_model(model, path)
        paths.append(path)
        # ... and the same model inside a run checkpoint.
        path = directory / f"{host.label}-run.pt"
        run = {"model": model_payload(model), "epoch": 3, "rng": {"torch": torch.get_rng_state()}}
        save_checkpoint(run, path, format=RUN_CHECKPOINT_FORMAT, schema_version=RUN_CHECKPOINT_VERSION)
        paths.append(path)
    return paths


def test_every_checkpoint_loads_with_weights_only_in_a_fresh_process(tmp_path: Path) -> None:
    paths = write_all(tmp_path)
    # The control: what the reference wrote (an enum in the payload) must fail the same check.
    control = tmp_path / "control-enum.pt"
    torch.save({"stage": _Colour.RED}, control)
    results = load_in_fresh_process([*paths, control])
    assert results[str(control)] is not None and "weights_only" in results[str(control)].lower()
    failures = {path: error for path, error in results.items() if error is not None and path != str(control)}
    assert failures == {}
    assert len(results) == len(TINY_HOSTS) * (len(STAGES) * len(AlphaAlgorithm) + 2) + 1


def test_mid_blending_with_a_learned_gate_stores_the_gate_as_tensors(tmp_path: Path) -> None:
    model = staged_model(TINY_HOSTS[2], SeedStage.BLENDING, AlphaAlgorithm.GATE)
    path = tmp_path / "gpt-blending-gate.pt"
    save_model(model, path)
    data = torch.load(path, weights_only=True)
    gate_keys = [key for key in data["state_dict"] if ".blend_gate." in key]
    assert len(gate_keys) == 4 * len(model.slot_ids())  # hidden/out weight and bias per slot
    for slot in data["seed_slots"].values():
        assert 0.0 < slot["alpha"]["alpha"] < 1.0 and slot["seed_state"]["stage"] == int(SeedStage.BLENDING)
        assert type(slot["seed_state"]["stage"]) is int and type(slot["alpha"]["mode"]) is int
