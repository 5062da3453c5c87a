"""The blueprint registry: seed architectures keyed by (topology, name).

A registry is an ordinary object; nothing lives on the class, so two
registries never share state and a spawned worker that calls
`default_registry()` rebuilds the same names in the same order.

Name order per topology is registration order and is used as the blueprint
action index, so it is fixed: built-ins first (in the order `cnn.register` and
`transformer.register` list them), then third-party blueprints, loaded from
entry points sorted by entry-point name.

Adding blueprints from another package, without editing Esper: write

    def register(registry):
        @registry.register("cnn", "my_seed", "what it does, in one line")
        def build(shape):  # shape: esper.contracts.SlotShape
            return MySeed(shape.width, shape.spatial_dims)

and declare it in that package's pyproject.toml:

    [project.entry-points."esper.blueprints"]
    mine = "mypkg.blueprints:register"

`default_registry()` loads every entry point in the group; one that fails to
load or to register raises `BlueprintError` naming it (none is skipped).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

import torch
from torch import nn

from esper.contracts.shapes import TOPOLOGIES, SlotShape

__all__ = [
    "ENTRY_POINT_GROUP",
    "BlueprintError",
    "BlueprintInfo",
    "BlueprintRegistry",
    "BlueprintSpec",
    "DuplicateBlueprintError",
    "Factory",
    "UnknownBlueprintError",
    "default_registry",
    "register_builtin_blueprints",
]

ENTRY_POINT_GROUP = "esper.blueprints"

Factory = Callable[[SlotShape], nn.Module]


class BlueprintError(ValueError):
    """A blueprint cannot be registered, found or built."""


class UnknownBlueprintError(BlueprintError):
    """No blueprint of that name for that topology (the message lists the available ones)."""


class DuplicateBlueprintError(BlueprintError):
    """A (topology, name) pair was registered twice."""


@dataclass(frozen=True)
class BlueprintSpec:
    topology: str
    name: str
    factory: Factory
    description: str


@dataclass(frozen=True)
class BlueprintInfo:
    name: str
    description: str
    # Exact number of trainable parameters at the shape the listing was made for.
    params: int


def _check_topology(topology: str) -> None:
    if topology not in TOPOLOGIES:
        raise BlueprintError(f"topology: expected one of {TOPOLOGIES}, got {topology!r}")


def _check_text(field: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise BlueprintError(f"{field}: expected a non-empty string, got {value!r}")


def _check_shape(shape: SlotShape) -> None:
    if not isinstance(shape, SlotShape):
        raise TypeError(f"shape: expected esper.contracts.SlotShape, got {type(shape).__name__}")


class BlueprintRegistry:
    """Blueprints per topology, in registration order, with exact parameter counts."""

    def __init__(self) -> None:
        self._specs: dict[str, dict[str, BlueprintSpec]] = {topology: {} for topology in TOPOLOGIES}
        # Keyed by (name, shape); shape carries the topology. Names are never
        # re-registered, so entries never go stale.
        self._param_counts: dict[tuple[str, SlotShape], int] = {}
        self._unbuildable: dict[tuple[str, SlotShape], str] = {}

    def _check_free(self, topology: str, name: str) -> None:
        if name in self._specs[topology]:
            raise DuplicateBlueprintError(f"blueprint {topology}/{name} is already registered")

    def register(self, topology: str, name: str, description: str) -> Callable[[Factory], Factory]:
        """Decorator registering `factory(shape) -> nn.Module` as (topology, name)."""
        _check_topology(topology)
        _check_text("name", name)
        _check_text("description", description)
        self._check_free(topology, name)

        def decorator(factory: Factory) -> Factory:
            if not callable(factory):
                raise BlueprintError(
                    f"blueprint {topology}/{name}: factory must be callable, got {factory!r}"
                )
            # Checked again: another registration may have happened since register() was called.
            self._check_free(topology, name)
            self._specs[topology][name] = BlueprintSpec(topology, name, factory, description)
            return factory

        return decorator

    def names(self, topology: str) -> list[str]:
        """Names for `topology` in registration order (the blueprint action order)."""
        _check_topology(topology)
        return list(self._specs[topology])

    def get(self, topology: str, name: str) -> BlueprintSpec:
        _check_topology(topology)
        specs = self._specs[topology]
        if name not in specs:
            available = ", ".join(specs) or "none"
            raise UnknownBlueprintError(f"unknown {topology} blueprint {name!r}; available: {available}")
        return specs[name]

    def create(self, name: str, shape: SlotShape) -> nn.Module:
        """Build blueprint `name` for `shape` (on the current default device)."""
        _check_shape(shape)
        spec = self.get(shape.topology, name)
        try:
            module = spec.factory(shape)
        except BlueprintError as error:
            raise BlueprintError(
                f"cannot build {shape.topology} blueprint {name!r} for width {shape.width}: {error}"
            ) from error
        if not isinstance(module, nn.Module):
            raise BlueprintError(
                f"blueprint {shape.topology}/{name}: factory returned {type(module).__name__}, "
                "expected a torch.nn.Module"
            )
        return module

    def _measure(self, name: str, shape: SlotShape) -> int | str:
        """Exact trainable parameter count, or why the blueprint cannot be built for shape."""
        _check_shape(shape)
        key = (name, shape)
        if key in self._param_counts:
            return self._param_counts[key]
        if key in self._unbuildable:
            return self._unbuildable[key]
        try:
            # Meta tensors have shapes but no storage: counting costs no memory or compute.
            with torch.device("meta"):
                module = self.create(name, shape)
        except UnknownBlueprintError:
            raise
        except BlueprintError as error:
            self._unbuildable[key] = str(error)
            return self._unbuildable[key]
        # parameters() yields each tensor once, so tied weights count once.
        count = sum(p.numel() for p in module.parameters() if p.requires_grad)
        self._param_counts[key] = count
        return count

    def param_count(self, name: str, shape: SlotShape) -> int:
        """Exact number of trainable parameters of blueprint `name` at `shape` (cached)."""
        measured = self._measure(name, shape)
        if isinstance(measured, str):
            raise BlueprintError(measured)
        return measured

    def unavailable_reason(self, name: str, shape: SlotShape) -> str | None:
        """Why `name` cannot be built for `shape` here (e.g. rank > width), or None if it can."""
        measured = self._measure(name, shape)
        return measured if isinstance(measured, str) else None

    def _check_listing_shape(self, topology: str, shape: SlotShape) -> None:
        _check_topology(topology)
        _check_shape(shape)
        if shape.topology != topology:
            raise BlueprintError(f"shape.topology: expected {topology!r}, got {shape.topology!r}")

    def listing(self, topology: str, shape: SlotShape) -> list[BlueprintInfo]:
        """Blueprints buildable for `shape`, sorted by (exact params, name).

        The ones that cannot be built are reported by `unavailable(topology, shape)`.
        """
        self._check_listing_shape(topology, shape)
        infos = []
        for spec in self._specs[topology].values():
            measured = self._measure(spec.name, shape)
            if isinstance(measured, int):
                infos.append(BlueprintInfo(spec.name, spec.description, measured))
        return sorted(infos, key=lambda info: (info.params, info.name))

    def unavailable(self, topology: str, shape: SlotShape) -> dict[str, str]:
        """Name -> reason for every blueprint of `topology` that cannot be built for `shape`."""
        self._check_listing_shape(topology, shape)
        reasons = {}
        for name in self._specs[topology]:
            measured = self._measure(name, shape)
            if isinstance(measured, str):
                reasons[name] = measured
        return reasons

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Run every `fn(registry)` entry point in `group`, sorted by name; return their names."""
        found = sorted(entry_points(group=group), key=lambda point: (point.name, point.value))
        loaded = []
        for point in found:
            where = f"entry point {point.name!r} ({point.value}) in group {group!r}"
            try:
                hook = point.load()
            # A plugin can fail to import in any way; the error is re-raised with its name.
            except Exception as error:
                raise BlueprintError(f"{where} failed to load: {type(error).__name__}: {error}") from error
            if not callable(hook):
                raise BlueprintError(
                    f"{where} loaded {type(hook).__name__}, expected a callable fn(registry)"
                )
            try:
                hook(self)
            except Exception as error:
                raise BlueprintError(
                    f"{where} failed while registering: {type(error).__name__}: {error}"
                ) from error
            loaded.append(point.name)
        return loaded


def register_builtin_blueprints(registry: BlueprintRegistry) -> None:
    """Register every built-in blueprint: CNN first, then transformer."""
    # Imported here: both modules import this one for BlueprintError.
    from esper.blueprints import cnn, transformer

    cnn.register(registry)
    transformer.register(registry)


_default: BlueprintRegistry | None = None
_default_lock = threading.Lock()


def default_registry() -> BlueprintRegistry:
    """This process's registry: built-ins plus entry points, built on first use."""
    global _default
    with _default_lock:
        if _default is None:
            registry = BlueprintRegistry()
            register_builtin_blueprints(registry)
            registry.load_entry_points()
            _default = registry
        return _default
