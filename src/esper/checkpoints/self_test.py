"""`esper audit --self-test`: prove that everything we write loads with weights_only=True.

In a temporary directory it writes model checkpoints at every lifecycle
stage, for every blueprint and every alpha algorithm, on three tiny hosts
(CNN 1-D, CNN 2-D, GPT), plus an agent-like checkpoint. Each file is checked
twice: by the static audit (which never runs the file's code) and by a real
`torch.load(weights_only=True)`. A summary table in the spirit of the
original checkpoint audit is printed; the exit code is 0 only if every file
passes both checks.

The helpers that grow a model to a given stage are public: the checkpoint
tests use them too.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from esper.blueprints import BlueprintRegistry, default_registry
from esper.checkpoints.audit import audit_file
from esper.checkpoints.io import save_checkpoint
from esper.checkpoints.model_io import save_model
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.constants import EMBARGO_EPOCHS
from esper.contracts.schema import AGENT_CHECKPOINT_FORMAT, AGENT_CHECKPOINT_VERSION
from esper.contracts.shapes import SlotShape, Topology
from esper.contracts.stages import SLOT_STAGES, SeedStage
from esper.hosts import build_host
from esper.model import MorphogeneticModel
from esper.random_stream import seeded_draws
from esper.seeds.gates import GateConfig

__all__ = [
    "BLEND_STEPS",
    "STAGES",
    "TINY_HOSTS",
    "TinyHost",
    "available_blueprints",
    "drive_to_stage",
    "perturb_seeds",
    "run_self_test",
    "staged_model",
]

# Every stage a slot can be checkpointed in (UNKNOWN is never a real stage).
STAGES: tuple[SeedStage, ...] = SLOT_STAGES
# Ramp length at germination; BLENDING checkpoints are taken after 2 of these ticks (mid-ramp).
BLEND_STEPS = 5
_MID_RAMP_TICKS = 2
# Permissive gates: G2 needs only its epoch count, G5 any positive measured contribution.
_GATES = GateConfig(permissive=True)


@dataclass(frozen=True)
class TinyHost:
    """A host small enough to build dozens of times a second, with one slot per blueprint."""

    label: str
    kind: str
    topology: Topology
    width: int
    spatial_dims: int = 0
    n_heads: int = 0

    @property
    def slot_shape(self) -> SlotShape:
        return SlotShape(self.topology, self.width, spatial_dims=self.spatial_dims, n_heads=self.n_heads)

    def config(self, n_slots: int) -> dict[str, Any]:
        if self.kind == "cnn":
            return {
                "in_channels": 1,
                "num_classes": 3,
                "widths": [self.width] * n_slots,
                "spatial_dims": self.spatial_dims,
                "pool": False,
            }
        return {
            "vocab_size": 11,
            "block_size": 8,
            "d_model": self.width,
            "n_heads": self.n_heads,
            "n_layers": n_slots,
            "layers_per_segment": 1,
        }

    def build(self, n_slots: int) -> nn.Module:
        return build_host(self.kind, self.config(n_slots))

    def example_input(self, batch: int = 3, seed: int = 0) -> Tensor:
        generator = torch.Generator().manual_seed(seed)
        if self.kind == "gpt":
            return torch.randint(0, 11, (batch, 6), generator=generator)
        return torch.randn((batch, 1) + (6,) * self.spatial_dims, generator=generator)


TINY_HOSTS: tuple[TinyHost, ...] = (
    TinyHost("cnn-1d", "cnn", "cnn", width=4, spatial_dims=1),
    TinyHost("cnn-2d", "cnn", "cnn", width=4, spatial_dims=2),
    # Width 32 so lora_large (rank 32) fits.
    TinyHost("gpt", "gpt", "transformer", width=32, n_heads=2),
)


def available_blueprints(host: TinyHost, registry: BlueprintRegistry | None = None) -> list[str]:
    """The topology's blueprints that can be built (and trained) here, in registry order."""
    registry = registry if registry is not None else default_registry()
    unavailable = registry.unavailable(host.topology, host.slot_shape)
    return [name for name in registry.names(host.topology) if name not in unavailable]


def perturb_seeds(model: MorphogeneticModel, seed: int) -> None:
    """Move every seed (and blend gate) away from its identity-at-birth weights, deterministically."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for params in model.seed_parameter_groups().values():
            for param in params:
                param.add_(0.1 * torch.randn(param.shape, generator=generator, dtype=param.dtype))


def drive_to_stage(
    model: MorphogeneticModel,
    stage: SeedStage,
    algorithm: AlphaAlgorithm,
    blueprints: Mapping[str, str],
    *,
    seed: int = 0,
) -> None:
    """Germinate `blueprints` (slot id -> name) and move all of them to `stage` together.

    The model's gates must be permissive (see `staged_model`). BLENDING stops
    mid-ramp; seeds are perturbed right after germination so no seed is a
    trivial identity.
    """
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {[s.name for s in STAGES]}, got {stage!r}")
    if stage == SeedStage.DORMANT:
        return
    for slot_id, blueprint in blueprints.items():
        model.germinate(slot_id, blueprint, alpha_algorithm=algorithm, blend_steps=BLEND_STEPS)
    perturb_seeds(model, seed)
    if stage == SeedStage.GERMINATED:
        return
    _advance_all(model, blueprints, SeedStage.TRAINING)
    if stage == SeedStage.TRAINING:
        return
    if stage in (SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING):
        for slot_id in blueprints:
            model.prune(slot_id, "self-test prune")
        ticks = {SeedStage.PRUNED: 0, SeedStage.EMBARGOED: 1, SeedStage.RESETTING: 1 + EMBARGO_EPOCHS}[stage]
        _tick(model, ticks)
        return
    _tick(model, model.gate_config.g2_min_epochs)
    _advance_all(model, blueprints, SeedStage.BLENDING)
    if stage == SeedStage.BLENDING:
        _tick(model, _MID_RAMP_TICKS)
        return
    _tick(model, BLEND_STEPS)
    _advance_all(model, blueprints, SeedStage.HOLDING)
    if stage == SeedStage.HOLDING:
        return
    for slot_id in blueprints:
        model.slot(slot_id).record_contribution(2.0)
    _advance_all(model, blueprints, SeedStage.FOSSILIZED)


def _tick(model: MorphogeneticModel, count: int) -> None:
    for _ in range(count):
        model.step_epoch()


def _advance_all(model: MorphogeneticModel, slot_ids: Mapping[str, str], target: SeedStage) -> None:
    for slot_id in slot_ids:
        # HOLDING leaves by FOSSILIZE, the other stages by ADVANCE (the lifecycle rulebook).
        result = model.fossilize(slot_id) if target == SeedStage.FOSSILIZED else model.advance(slot_id)
        if not result.passed or model.slot(slot_id).stage != target:
            raise RuntimeError(f"self-test: slot {slot_id} did not reach {target.name}: {result.message}")


def staged_model(
    host: TinyHost,
    stage: SeedStage,
    algorithm: AlphaAlgorithm,
    *,
    registry: BlueprintRegistry | None = None,
    seed: int = 0,
) -> MorphogeneticModel:
    """A model on `host` with one slot per available blueprint, every slot at `stage`."""
    names = available_blueprints(host, registry)
    # The weights a process seeded with `seed` draws, from generators of its own (the caller's stay put).
    with seeded_draws(seed):
        model = MorphogeneticModel(host.build(len(names)), gates=_GATES, registry=registry)
        drive_to_stage(model, stage, algorithm, dict(zip(model.slot_ids(), names, strict=True)), seed=seed)
    return model


def _agent_like_payload() -> dict[str, Any]:
    """What a small policy checkpoint holds: a state_dict and a primitive config."""
    with seeded_draws(0):
        network = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    return {
        "model_state_dict": dict(network.state_dict()),
        "config": {"hidden": 8, "lr": 3e-4, "heads": ["op", "slot"]},
    }


@dataclass(frozen=True)
class _Checked:
    checkpoint_type: str
    stage: str
    algorithm: str
    file: str
    weights_only_error: str | None
    audit: dict[str, Any]

    @property
    def passed(self) -> bool:
        return (
            self.weights_only_error is None
            and self.audit["status"] == "compatible"
            and not self.audit["unsafe"]
        )


def _check_file(path: Path, checkpoint_type: str, stage: str, algorithm: str) -> _Checked:
    report = audit_file(path)
    error = None
    try:
        # The check itself: a plain weights_only load, exactly as a user would do it.
        torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, OSError, EOFError) as exc:
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    audit = {**report.to_dict(), "unsafe": report.unsafe}
    return _Checked(checkpoint_type, stage, algorithm, path.name, error, audit)


def _generate_and_check(directory: Path) -> list[_Checked]:
    checked: list[_Checked] = []
    agent = directory / "agent.pt"
    save_checkpoint(
        _agent_like_payload(), agent, format=AGENT_CHECKPOINT_FORMAT, schema_version=AGENT_CHECKPOINT_VERSION
    )
    checked.append(_check_file(agent, "Agent", "N/A", "N/A"))
    for host in TINY_HOSTS:
        kind = f"Model ({host.label})"
        for stage in STAGES:
            # A DORMANT slot has no seed, so the algorithm does not enter the file.
            algorithms = (AlphaAlgorithm.ADD,) if stage == SeedStage.DORMANT else tuple(AlphaAlgorithm)
            for algorithm in algorithms:
                path = directory / f"{host.label}_{stage.name.lower()}_{algorithm.name.lower()}.pt"
                save_model(staged_model(host, stage, algorithm), path)
                label = "-" if stage == SeedStage.DORMANT else algorithm.name
                checked.append(_check_file(path, kind, stage.name, label))
    return checked


def _summary_rows(checked: list[_Checked]) -> list[dict[str, Any]]:
    """One row per (checkpoint type, stage), covering its alpha algorithms."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for item in checked:
        key = (item.checkpoint_type, item.stage)
        if key not in rows:
            rows[key] = {
                "type": item.checkpoint_type,
                "stage": item.stage,
                "algorithms": [],
                "files": 0,
                "weights_only": True,
                "issues": 0,
                "passed": True,
            }
        row = rows[key]
        row["algorithms"].append(item.algorithm)
        row["files"] += 1
        row["weights_only"] = row["weights_only"] and item.weights_only_error is None
        row["issues"] += len(item.audit["issues"]) + (item.audit["status"] != "compatible")
        row["passed"] = row["passed"] and item.passed
    return list(rows.values())


def _print_table(rows: list[dict[str, Any]], checked: list[_Checked], console: Console) -> None:
    hosts = ", ".join(f"{host.label}: {len(available_blueprints(host))}" for host in TINY_HOSTS)
    table = Table(
        title="Checkpoint self-test: torch.load(weights_only=True) and the static audit",
        caption=f"Model rows: one slot per blueprint ({hosts}); one file per alpha algorithm "
        f"({', '.join(a.name for a in AlphaAlgorithm)}) except DORMANT.",
    )
    for column in ("Checkpoint type", "Stage", "Files", "weights_only=True", "Issues found"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["type"],
            row["stage"],
            str(row["files"]),
            "PASS" if row["weights_only"] else "FAIL",
            f"{row['issues']} issues",
            style=None if row["passed"] else "bold red",
        )
    console.print(table)
    for item in checked:
        if not item.passed:
            console.print(
                f"[bold red]FAIL[/] {item.file}: weights_only error: {item.weights_only_error}; "
                f"audit: {item.audit['status']} ({len(item.audit['issues'])} issues)"
            )
    passed = sum(item.passed for item in checked)
    verdict = "[bold green]all PASS[/]" if passed == len(checked) else "[bold red]FAILED[/]"
    console.print(f"{passed}/{len(checked)} checkpoint files pass both checks: {verdict}")


def run_self_test(json_output: bool) -> int:
    """Generate, audit and load every kind of checkpoint we write; 0 only if all pass."""
    # Tiny tensors: one intra-op thread is fastest, and far faster on a busy machine
    # where extra threads spin against other processes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="esper-self-test-") as directory:
            checked = _generate_and_check(Path(directory))
    finally:
        torch.set_num_threads(threads)
    rows = _summary_rows(checked)
    ok = all(item.passed for item in checked)
    if json_output:
        files = [
            {
                "type": item.checkpoint_type,
                "stage": item.stage,
                "algorithm": item.algorithm,
                "file": item.file,
                "weights_only": item.weights_only_error is None,
                "weights_only_error": item.weights_only_error,
                "audit": item.audit,
                "passed": item.passed,
            }
            for item in checked
        ]
        print(json.dumps({"passed": ok, "summary": rows, "files": files}, indent=2))
    else:
        _print_table(rows, checked, Console(highlight=False))
    return 0 if ok else 1
