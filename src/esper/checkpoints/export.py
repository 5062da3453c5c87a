"""Export a grown model as a plain, static nn.Module (and as a safetensors file).

`export_static(model)` bakes every fossilized seed into a `StaticGrownModel`:
the host's stem, segments and head, and after a segment the fossilized seed
in a fixed-alpha blend. No slots, no lifecycle, no alpha controller. Seeds
that are not fossilized are left out, with a warning naming each slot and
its stage. In eval mode the outputs equal the model's bit for bit.

`export_safetensors(model, path)` writes the static module's weights with
safetensors and enough JSON metadata (host kind/config, per-slot blueprint,
algorithm and alpha) for `load_exported(path)` to rebuild it. Tied tensors
(a GPT host shares embedding and head) are written once and re-tied on load.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from esper.blueprints import BlueprintRegistry, default_registry
from esper.checkpoints.atomic import atomic_write
from esper.checkpoints.errors import CheckpointError, join_path
from esper.checkpoints.strict import validate
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.stages import SeedStage
from esper.hosts import HOST_KINDS, build_host
from esper.hosts.protocol import HostProtocol
from esper.model import MorphogeneticModel
from esper.model.attached import AttachedModel
from esper.random_stream import discarded_draws
from esper.seeds.blending import BlendGate, blend

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "FixedBlend",
    "StaticGrownModel",
    "export_safetensors",
    "export_static",
    "load_exported",
]

EXPORT_FORMAT = "esper.static"
EXPORT_VERSION = 1


class FixedBlend(nn.Module):
    """A fossilized seed joined to the host at a fixed alpha, with the slot's own operator."""

    def __init__(
        self, blueprint: str, algorithm: AlphaAlgorithm, alpha: float, seed: nn.Module, gate: BlendGate | None
    ) -> None:
        super().__init__()
        if (gate is None) == (algorithm is AlphaAlgorithm.GATE):
            raise ValueError(
                f"FixedBlend: algorithm {algorithm.name} {'needs' if gate is None else 'takes no'} gate"
            )
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"FixedBlend: alpha must be in [0, 1], got {alpha!r}")
        self.blueprint = blueprint  # recorded so an export file can rebuild the seed
        self.algorithm = algorithm
        self.alpha = float(alpha)
        self.seed = seed
        self.gate = gate

    def extra_repr(self) -> str:
        return f"blueprint={self.blueprint!r}, algorithm={self.algorithm.name}, alpha={self.alpha}"

    def forward(self, h: Tensor) -> Tensor:
        out = self.seed(h)
        if self.algorithm is AlphaAlgorithm.ADD and self.alpha == 1.0:
            return out  # lerp(h, s, 1) is exactly s
        alpha = torch.tensor(self.alpha, dtype=h.dtype, device=h.device)
        return blend(self.algorithm, h, out, h, alpha, self.gate)


class StaticGrownModel(nn.Module):
    """The host with its fossilized seeds baked in: `stem -> (segment -> [seed]) * n -> head`."""

    def __init__(self, host: nn.Module, blends: dict[str, FixedBlend]) -> None:
        super().__init__()
        if not isinstance(host, HostProtocol):
            raise TypeError(f"StaticGrownModel: host must implement HostProtocol, got {type(host).__name__}")
        unknown = sorted(set(blends) - set(host.slot_ids()))
        if unknown:
            raise ValueError(
                f"StaticGrownModel: {unknown} are not slots of the host; slots: {host.slot_ids()}"
            )
        self.host = host
        self.blends = nn.ModuleDict(blends)
        self._slot_after_segment = list(host.slot_ids())

    def forward(self, x: Tensor) -> Tensor:
        h = self.host.stem(x)
        for segment, slot_id in zip(self.host.segments, self._slot_after_segment, strict=True):
            h = segment(h)
            if slot_id in self.blends:
                h = self.blends[slot_id](h)
        return self.host.head(h)

    def fixed_blends(self) -> dict[str, FixedBlend]:
        """The baked-in seeds by slot id (`self.blends`, typed: an nn.ModuleDict's values are plain Modules)."""
        return {sid: blend for sid, blend in self.blends.items() if isinstance(blend, FixedBlend)}


def export_static(model: MorphogeneticModel) -> StaticGrownModel:
    """A standalone copy of `model` with its fossilized seeds baked in (shares no tensors with it)."""
    if not isinstance(model, MorphogeneticModel):
        raise TypeError(f"model must be a MorphogeneticModel, got {type(model).__name__}")
    if isinstance(model, AttachedModel):
        raise TypeError(
            "export_static: an attached model (esper.attach) has no stem/segments/head to rebuild; "
            "use esper.adapters.export_attached(model), which returns your own module with the fossilized "
            "seeds baked in"
        )
    kept: dict[str, tuple[str, AlphaAlgorithm, float, nn.Module, BlendGate | None]] = {}
    for slot in model.slots():
        if slot.seed is None:
            continue  # nothing to leave out: dormant, or the seed was pruned
        if slot.stage != SeedStage.FOSSILIZED:
            warnings.warn(
                f"export: slot {slot.slot_id} left out: its seed is {slot.stage.name}, not FOSSILIZED",
                stacklevel=2,
            )
            continue
        state = slot.state
        assert state is not None  # a slot with a seed module has a seed state
        algorithm, alpha = state.alpha_algorithm, slot.alpha.alpha
        kept[slot.slot_id] = (state.blueprint, algorithm, alpha, slot.seed, slot.blend_gate)
    # One deepcopy for everything, so tensors shared between parts stay shared in the copy.
    host, parts = copy.deepcopy((model.host, kept))
    blends = {sid: FixedBlend(*part) for sid, part in parts.items()}
    static = StaticGrownModel(host, blends)
    static.train(model.training)
    return static


# ------------------------------------------------------------------ safetensors
class _ExportedSeed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    blueprint: str
    algorithm: str
    alpha: float


class _ExportMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    format: str
    version: int
    host_kind: str
    host_config: dict[str, Any]
    seeds: dict[str, _ExportedSeed]
    # Tensor name -> the name it is stored under (tied weights are written once).
    aliases: dict[str, str]


def export_safetensors(model: MorphogeneticModel, path: str | os.PathLike[str]) -> StaticGrownModel:
    """Export `model` and write the static module's weights and metadata to `path` (atomically)."""
    static = export_static(model)
    state = static.state_dict()
    stored: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    first_name: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], str] = {}
    for name, tensor in state.items():
        # Same storage, offset, shape and strides: the same tensor under two names (tied weights).
        key = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
        )
        if key in first_name:
            aliases[name] = first_name[key]
        else:
            first_name[key] = name
            # A private copy: safetensors refuses tensors that share memory.
            stored[name] = tensor.detach().clone().contiguous()
    metadata = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "host_kind": model.host.kind,
        "host_config": model.host.config(),
        "seeds": {
            sid: {"blueprint": blend.blueprint, "algorithm": blend.algorithm.name, "alpha": blend.alpha}
            for sid, blend in static.fixed_blends().items()
        },
        "aliases": aliases,
    }
    text = {"esper": json.dumps(metadata, sort_keys=True)}
    data = safetensors_bytes(stored, metadata=text)
    atomic_write(path, lambda handle: handle.write(data))
    return static


def load_exported(
    path: str | os.PathLike[str], *, registry: BlueprintRegistry | None = None
) -> StaticGrownModel:
    """Rebuild a StaticGrownModel (in eval mode) from an `export_safetensors` file, strictly checked."""
    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            header = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as error:
        raise CheckpointError.at("", f"cannot read safetensors file: {error}", file=path) from None
    try:
        return _rebuild(header, tensors, registry if registry is not None else default_registry())
    except CheckpointError as error:
        raise error.with_file(path) from None


def _rebuild(
    header: dict[str, str] | None, tensors: dict[str, Tensor], registry: BlueprintRegistry
) -> StaticGrownModel:
    if header is None or "esper" not in header:
        raise CheckpointError.at("metadata > esper", "missing required key (not an esper export)")
    try:
        raw = json.loads(header["esper"])
    except json.JSONDecodeError as error:
        raise CheckpointError.at("metadata > esper", f"invalid JSON: {error}") from None
    meta = validate(_ExportMetadata, raw, "metadata > esper")
    if meta.format != EXPORT_FORMAT or meta.version != EXPORT_VERSION:
        raise CheckpointError.at(
            "metadata > esper > format",
            f"expected {EXPORT_FORMAT!r} version {EXPORT_VERSION}, "
            f"got {meta.format!r} version {meta.version}",
        )
    if meta.host_kind not in HOST_KINDS:
        raise CheckpointError.at("metadata > esper > host_kind", f"unknown host kind {meta.host_kind!r}")
    # The constructors' initial weights are replaced by the stored tensors below: a throwaway
    # generator takes those draws, so the caller's generators do not move.
    with discarded_draws():
        try:
            host = build_host(meta.host_kind, meta.host_config)
        except ValueError as error:
            raise CheckpointError.at("metadata > esper > host_config", str(error)) from None
        if not isinstance(host, HostProtocol):
            raise CheckpointError.at(
                "metadata > esper > host_kind", f"host kind {meta.host_kind!r} does not implement HostProtocol"
            )
        blends = {sid: _rebuild_blend(host, sid, seed, registry) for sid, seed in meta.seeds.items()}
        static = StaticGrownModel(host, blends)
    state = dict(tensors)
    for name, target in meta.aliases.items():
        if target not in tensors:
            raise CheckpointError.at(
                join_path("metadata > esper > aliases", name), f"no stored tensor {target!r}"
            )
        state[name] = tensors[target]
    expected = static.state_dict()
    problems = [(join_path("tensors", k), "missing required key") for k in expected if k not in state]
    problems += [(join_path("tensors", k), "unknown key") for k in state if k not in expected]
    problems += [
        (join_path("tensors", k), f"expected shape {tuple(expected[k].shape)}, got {tuple(t.shape)}")
        for k, t in state.items()
        if k in expected and t.shape != expected[k].shape
    ]
    if problems:
        raise CheckpointError.many(problems)
    static.load_state_dict(state, strict=True)
    return static.eval()


def _rebuild_blend(
    host: HostProtocol, slot_id: str, seed: _ExportedSeed, registry: BlueprintRegistry
) -> FixedBlend:
    where = join_path("metadata > esper > seeds", slot_id)
    if slot_id not in host.slot_ids():
        raise CheckpointError.at(where, f"not a slot of this host; slots: {host.slot_ids()}")
    if seed.algorithm not in AlphaAlgorithm.__members__:
        raise CheckpointError.at(
            join_path(where, "algorithm"),
            f"expected one of {list(AlphaAlgorithm.__members__)}, got {seed.algorithm!r}",
        )
    shape = host.slot_shape(slot_id)
    try:
        module = registry.create(seed.blueprint, shape)
        algorithm = AlphaAlgorithm[seed.algorithm]
        gate = (
            BlendGate(shape.width, channel_dim=1 if shape.topology == "cnn" else -1)
            if algorithm is AlphaAlgorithm.GATE
            else None
        )
        return FixedBlend(seed.blueprint, algorithm, seed.alpha, module, gate)
    except ValueError as error:
        raise CheckpointError.at(where, str(error)) from None
