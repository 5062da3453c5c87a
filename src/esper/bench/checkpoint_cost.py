"""What our self-describing, validated, atomic checkpoints cost over plain PyTorch.

Goal metrics (the brief's definition of "plain"):
- checkpoint_save_ratio: esper.save_model vs torch.save(model.state_dict());
- checkpoint_load_ratio: esper.load_model vs torch.load(weights_only=True)
  of that state_dict.
Attribution metrics (no goal), plain contenders that do the same job:
- checkpoint_save_vs_atomic_ratio: vs the same durable, atomic write done
  plainly (torch.save to a temporary file, fsync, rename, fsync of the
  directory), so the remainder is what our code adds beyond durability;
- checkpoint_load_vs_rebuild_ratio: vs torch.load, building the same
  modules by hand (host class, seed classes, blend gate) and
  load_state_dict, i.e. plain PyTorch's way of getting a usable model back;
- checkpoint_load_then_read_all_ratio: both loads followed by reading every
  tensor once, since our load memory-maps the file and pays for its pages on
  first touch rather than at load time;
- checkpoint_load_read_ratio: only the reading part of esper.load_model
  (esper.checkpoints.load_checkpoint: torch.load(weights_only, mmap) of our
  file and the header check) vs torch.load(weights_only); the rest of
  load_model's time is building the model and handing it the tensors.

Saves are timed with the wall clock (our writes fsync, and waiting on the
disk is part of the cost); loads read a file the page cache holds, pure
CPU work, and use the plan's clock.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from esper.bench.model_overhead import fossilize_all, grow_to_blending, require_passed
from esper.bench.timing import BenchError, BenchSettings, PairTiming, summarise, time_pair
from esper.blueprints.cnn import ConvLightSeed
from esper.checkpoints import load_checkpoint, load_model, save_model
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.schema import MODEL_CHECKPOINT_FORMAT
from esper.hosts import CNNHost, CNNHostConfig, build_host
from esper.model import MorphogeneticModel
from esper.seeds.blending import BlendGate
from esper.seeds.gates import GateConfig

__all__ = ["CHECKPOINT_GOAL", "checkpoint_cost", "grown_checkpoint_model"]

CHECKPOINT_GOAL = 1.2


# Case name -> host widths. Both sizes are measured because our load has a fixed cost
# (building ~45 modules) while torch.load's grows with the data it copies.
MODEL_WIDTHS: dict[str, list[int]] = {
    "cnn2d_wide": [64, 128, 256, 256],  # 2.4 M parameters, 9 MiB
    "cnn2d_xl": [224, 448, 896, 896],  # 29 M parameters, 109 MiB
}
TINY_WIDTHS = [16, 16, 16, 16]


def grown_checkpoint_model(tiny: bool, widths: list[int] | None = None) -> MorphogeneticModel:
    """A 2-D CNN with conv_light seeds: two fossilized, one mid-blend with a gate, one training.

    `widths` defaults to the "cnn2d_wide" case (9 MiB of float32).
    """
    widths = TINY_WIDTHS if tiny else (widths or MODEL_WIDTHS["cnn2d_wide"])
    host = build_host("cnn", {"in_channels": 3, "num_classes": 10, "widths": widths, "spatial_dims": 2})
    model = MorphogeneticModel(host, gates=GateConfig(permissive=True))
    first, second, third, fourth = model.slot_ids()
    grow_to_blending(model, [first, second], "conv_light")
    fossilize_all(model, [first, second])
    grow_to_blending(model, [third], "conv_light", algorithm=AlphaAlgorithm.GATE)
    model.step_epoch()  # part-way up the blend ramp
    require_passed(model.germinate(fourth, "conv_light"), fourth, "germinate")
    require_passed(model.advance(fourth), fourth, "advance to TRAINING")
    return model


# ------------------------------------------------------------ plain contenders
def _save_plain(model: nn.Module, path: Path) -> None:
    torch.save(model.state_dict(), path)


def _save_plain_atomic(model: nn.Module, path: Path) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as handle:
        torch.save(model.state_dict(), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _load_plain(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


class _PlainSlot(nn.Module):
    def __init__(self, seed: nn.Module, blend_gate: nn.Module | None) -> None:
        super().__init__()
        self.seed = seed
        self.blend_gate = blend_gate


class _PlainGrown(nn.Module):
    """The checkpoint model's modules built by hand, with the same state_dict keys."""

    def __init__(self, host_config: CNNHostConfig, gated: dict[str, bool]) -> None:
        super().__init__()
        self.host = CNNHost(host_config)
        slots = {}
        for (sid, has_gate), width in zip(gated.items(), host_config.widths, strict=True):
            gate = BlendGate(width, channel_dim=1) if has_gate else None
            slots[sid] = _PlainSlot(ConvLightSeed(width, host_config.spatial_dims), gate)
        self.seed_slots = nn.ModuleDict(slots)


def _load_plain_rebuild(path: Path, host_config: CNNHostConfig, gated: dict[str, bool]) -> nn.Module:
    module = _PlainGrown(host_config, gated)
    module.load_state_dict(_load_plain(path), strict=True)
    return module


def _touch(tensors: Any) -> None:
    """Read every byte once: memory-mapped tensors pay for their page faults here."""
    for tensor in tensors:
        tensor.sum()


def _load_ours_touched(path: Path) -> None:
    _touch(load_model(path).state_dict().values())


def _load_plain_touched(path: Path) -> None:
    _touch(_load_plain(path).values())


def _check_round_trip(model: MorphogeneticModel, loaded: dict[str, dict[str, torch.Tensor]]) -> None:
    expected = model.state_dict()
    for name, state in loaded.items():
        if state.keys() != expected.keys() or not all(torch.equal(state[k], expected[k]) for k in expected):
            raise BenchError(f"checkpoint_cost: {name} did not give back the saved weights")


# ---------------------------------------------------------------------- suite
def _time_case(model: MorphogeneticModel, settings: BenchSettings, directory: Path) -> dict[str, PairTiming]:
    """Every timing pair of one checkpoint model, files in `directory`."""
    wall = dataclasses.replace(settings.plan, clock="wall")
    if not all(slot.seed is not None for slot in model.slots()):
        raise BenchError("checkpoint_cost: every slot of the checkpoint model should hold a seed")
    host_config = CNNHostConfig.model_validate(model.host.config())
    gated = {slot.slot_id: slot.blend_gate is not None for slot in model.slots()}
    ours_path = directory / "ours.pt"
    plain_path = directory / "plain.pt"
    save_model(model, ours_path)
    _save_plain(model, plain_path)
    rebuild = partial(_load_plain_rebuild, plain_path, host_config, gated)
    _check_round_trip(
        model,
        {
            "esper.load_model": load_model(ours_path).state_dict(),
            "torch.load": _load_plain(plain_path),
            "plain rebuild": rebuild().state_dict(),
        },
    )
    save_ours = partial(save_model, model, ours_path)
    load_ours = partial(load_model, ours_path)
    return {
        "save": time_pair(save_ours, partial(_save_plain, model, plain_path), wall),
        "save_atomic": time_pair(save_ours, partial(_save_plain_atomic, model, plain_path), wall),
        "load": time_pair(load_ours, partial(_load_plain, plain_path), settings.plan),
        "load_rebuild": time_pair(load_ours, rebuild, settings.plan),
        "load_touch": time_pair(
            partial(_load_ours_touched, ours_path), partial(_load_plain_touched, plain_path), settings.plan
        ),
        "load_read": time_pair(
            partial(load_checkpoint, ours_path, format=MODEL_CHECKPOINT_FORMAT),
            partial(_load_plain, plain_path),
            settings.plan,
        ),
    }


def checkpoint_cost(settings: BenchSettings) -> dict[str, Any]:
    """Save and load, ours vs plain, interleaved, in a temporary directory, for each model size."""
    cases: dict[str, tuple[str, dict[str, PairTiming]]] = {}
    for name, widths in (MODEL_WIDTHS.items() if not settings.tiny else [("cnn2d_wide", TINY_WIDTHS)]):
        model = grown_checkpoint_model(settings.tiny, widths)
        size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        about = f"2-D CNN widths {widths} with 4 conv_light seeds, {size / 2**20:.1f} MiB of tensors"
        with tempfile.TemporaryDirectory(prefix="esper-bench-") as directory:
            cases[name] = (about, _time_case(model, settings, Path(directory)))
        del model
    metrics = (
        ("checkpoint_save_ratio", "save", CHECKPOINT_GOAL, "esper.save_model vs torch.save(state_dict)"),
        ("checkpoint_load_ratio", "load", CHECKPOINT_GOAL, "esper.load_model vs torch.load(weights_only)"),
        (
            "checkpoint_save_vs_atomic_ratio",
            "save_atomic",
            None,
            "esper.save_model vs torch.save(state_dict) to a temp file + fsync + rename + directory fsync",
        ),
        (
            "checkpoint_load_vs_rebuild_ratio",
            "load_rebuild",
            None,
            "esper.load_model vs building the modules by hand + load_state_dict(torch.load(weights_only))",
        ),
        (
            "checkpoint_load_then_read_all_ratio",
            "load_touch",
            None,
            "esper.load_model vs torch.load(weights_only), each followed by reading every tensor once "
            "(our load memory-maps the file: pages are read on first touch, not at load)",
        ),
        (
            "checkpoint_load_read_ratio",
            "load_read",
            None,
            "esper.checkpoints.load_checkpoint (the reading part of load_model) vs torch.load(weights_only)",
        ),
    )
    return {
        name: summarise(
            {case: (f"{about}, {key.replace('_', ' ')}", timings[key]) for case, (about, timings) in cases.items()},
            kind="ratio",
            goal=goal,
            definition=f"ours / plain: {definition}",
        )
        for name, key, goal, definition in metrics
    }
