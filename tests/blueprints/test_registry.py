"""The registry: registration rules, lookups, exact counts, listings, entry points, processes."""

from __future__ import annotations

import multiprocessing
import sys
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from esper.blueprints import (
    BlueprintError,
    BlueprintRegistry,
    DuplicateBlueprintError,
    UnknownBlueprintError,
    default_registry,
    register_builtin_blueprints,
)
from esper.contracts.shapes import SlotShape

CNN = SlotShape("cnn", 16, spatial_dims=1)
TRANSFORMER = SlotShape("transformer", 16, n_heads=2)


def _linear_factory(out_features: int):
    def factory(shape: SlotShape) -> nn.Module:
        return nn.Linear(shape.width, out_features, bias=False)

    return factory


def test_register_returns_the_factory_and_get_finds_it() -> None:
    reg = BlueprintRegistry()
    factory = _linear_factory(2)
    assert reg.register("cnn", "lin", "a linear map")(factory) is factory
    spec = reg.get("cnn", "lin")
    assert (spec.topology, spec.name, spec.factory, spec.description) == (
        "cnn",
        "lin",
        factory,
        "a linear map",
    )
    assert reg.names("transformer") == []


def test_duplicates_raise() -> None:
    reg = BlueprintRegistry()
    reg.register("cnn", "lin", "first")(_linear_factory(2))
    with pytest.raises(DuplicateBlueprintError, match="cnn/lin is already registered"):
        reg.register("cnn", "lin", "second")(_linear_factory(3))
    # The same name under the other topology is a different blueprint.
    reg.register("transformer", "lin", "other topology")(_linear_factory(3))
    builtins = BlueprintRegistry()
    register_builtin_blueprints(builtins)
    with pytest.raises(DuplicateBlueprintError):
        register_builtin_blueprints(builtins)


def test_duplicate_is_caught_even_between_register_and_decorate() -> None:
    reg = BlueprintRegistry()
    pending = reg.register("cnn", "lin", "first")
    reg.register("cnn", "lin", "sneaked in")(_linear_factory(2))
    with pytest.raises(DuplicateBlueprintError):
        pending(_linear_factory(3))
    assert reg.get("cnn", "lin").description == "sneaked in"


@pytest.mark.parametrize(
    ("topology", "name", "description", "match"),
    [
        ("rnn", "x", "d", "topology: expected one of"),
        ("cnn", "", "d", "name: expected a non-empty string"),
        ("cnn", "x", "  ", "description: expected a non-empty string"),
    ],
)
def test_register_rejects_bad_arguments(topology: str, name: str, description: str, match: str) -> None:
    with pytest.raises(BlueprintError, match=match):
        BlueprintRegistry().register(topology, name, description)


def test_register_rejects_a_non_callable_factory() -> None:
    with pytest.raises(BlueprintError, match="factory must be callable"):
        BlueprintRegistry().register("cnn", "x", "d")(42)  # type: ignore[arg-type]


def test_unknown_name_lists_the_available_names() -> None:
    reg = BlueprintRegistry()
    register_builtin_blueprints(reg)
    with pytest.raises(UnknownBlueprintError) as info:
        reg.create("conv_huge", CNN)
    message = str(info.value)
    assert "unknown cnn blueprint 'conv_huge'" in message
    assert all(name in message for name in reg.names("cnn"))
    assert "lora" not in message
    with pytest.raises(UnknownBlueprintError, match="available: none"):
        BlueprintRegistry().get("transformer", "lora")
    with pytest.raises(BlueprintError, match="topology"):
        reg.names("rnn")


def test_fresh_registries_are_independent() -> None:
    first, second = BlueprintRegistry(), BlueprintRegistry()
    first.register("cnn", "only_here", "d")(_linear_factory(2))
    assert first.names("cnn") == ["only_here"]
    assert second.names("cnn") == []
    with pytest.raises(UnknownBlueprintError):
        second.get("cnn", "only_here")


def test_create_checks_its_inputs_and_output() -> None:
    reg = BlueprintRegistry()
    reg.register("cnn", "tensor", "returns a tensor")(lambda shape: torch.zeros(1))
    with pytest.raises(
        BlueprintError, match=r"cnn/tensor: factory returned Tensor, expected a torch\.nn\.Module"
    ):
        reg.create("tensor", CNN)
    with pytest.raises(TypeError, match=r"shape: expected esper\.contracts\.SlotShape, got dict"):
        reg.create("tensor", {"topology": "cnn"})  # type: ignore[arg-type]


def test_create_names_the_blueprint_when_the_factory_refuses() -> None:
    reg = BlueprintRegistry()

    def refuse(shape: SlotShape) -> nn.Module:
        raise BlueprintError("needs a GPU")

    reg.register("transformer", "gpu_only", "d")(refuse)
    with pytest.raises(
        BlueprintError, match="cannot build transformer blueprint 'gpu_only' for width 16: needs a GPU"
    ):
        reg.create("gpu_only", TRANSFORMER)


def test_param_count_is_exact_cached_and_built_on_meta() -> None:
    reg = BlueprintRegistry()
    devices: list[str] = []

    class Tied(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.a = nn.Linear(width, width)
            self.b = self.a  # the same tensors twice: counted once
            self.frozen = nn.Parameter(torch.zeros(7), requires_grad=False)

    def factory(shape: SlotShape) -> nn.Module:
        module = Tied(shape.width)
        devices.append(module.a.weight.device.type)
        return module

    reg.register("cnn", "tied", "d")(factory)
    assert reg.param_count("tied", CNN) == 16 * 16 + 16
    assert reg.param_count("tied", CNN) == 16 * 16 + 16
    assert devices == ["meta"]
    wider = SlotShape("cnn", 32, spatial_dims=1)
    assert reg.param_count("tied", wider) == 32 * 32 + 32
    assert devices == ["meta", "meta"]
    assert reg.create("tied", CNN).a.weight.device.type == "cpu"


def test_listing_is_sorted_by_params_then_name_and_reports_the_unbuildable() -> None:
    reg = BlueprintRegistry()
    for name, size in [("c", 5), ("a", 9), ("b", 5)]:
        reg.register("cnn", name, f"{name} blueprint")(_linear_factory(size))
    reg.register("cnn", "z", "no parameters")(lambda shape: nn.Identity())

    def needs_width_32(shape: SlotShape) -> nn.Module:
        if shape.width < 32:
            raise BlueprintError(f"width {shape.width} < 32")
        return nn.Linear(1, 1)

    reg.register("cnn", "wide_only", "d")(needs_width_32)
    listing = reg.listing("cnn", CNN)
    assert [(info.name, info.params) for info in listing] == [("z", 0), ("b", 80), ("c", 80), ("a", 144)]
    assert listing[1].description == "b blueprint"
    assert list(reg.unavailable("cnn", CNN)) == ["wide_only"]
    assert reg.unavailable_reason("wide_only", CNN).endswith("width 16 < 32")
    assert reg.unavailable_reason("a", CNN) is None
    with pytest.raises(BlueprintError, match="width 16 < 32"):
        reg.param_count("wide_only", CNN)
    wide = SlotShape("cnn", 32, spatial_dims=1)
    assert "wide_only" in [info.name for info in reg.listing("cnn", wide)]
    assert reg.unavailable("cnn", wide) == {}
    with pytest.raises(BlueprintError, match=r"shape\.topology: expected 'transformer', got 'cnn'"):
        reg.listing("transformer", CNN)
    with pytest.raises(UnknownBlueprintError):
        reg.unavailable_reason("nope", CNN)


def _write_distribution(root: Path, dist: str, entry_points: str, modules: dict[str, str]) -> None:
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source)


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A directory on sys.path for fake distributions, and a unique module name for them."""
    module = f"esper_fakeplugin_{uuid.uuid4().hex}"
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path, module
    sys.modules.pop(module, None)


PLUGIN_SOURCE = """
from torch import nn

def register(registry):
    @registry.register("cnn", "plugin_seed", "from a plugin")
    def build(shape):
        return nn.Identity()

def register_other(registry):
    @registry.register("transformer", "plugin_mlp", "also from a plugin")
    def build(shape):
        return nn.Linear(shape.width, shape.width)

not_callable = 3

def explode(registry):
    raise RuntimeError("plugin bug")
"""


def test_entry_points_register_in_entry_point_name_order(plugin_dir: tuple[Path, str]) -> None:
    root, module = plugin_dir
    entry_points = f"[esper.blueprints]\nzeta = {module}:register_other\nalpha = {module}:register\n"
    _write_distribution(root, "fakeplugin", entry_points, {module: PLUGIN_SOURCE})
    reg = BlueprintRegistry()
    register_builtin_blueprints(reg)
    builtin_cnn = reg.names("cnn")
    assert reg.load_entry_points() == ["alpha", "zeta"]
    assert reg.names("cnn") == [*builtin_cnn, "plugin_seed"]
    assert reg.names("transformer")[-1] == "plugin_mlp"
    assert reg.param_count("plugin_mlp", TRANSFORMER) == 16 * 16 + 16


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("esper_no_such_module_{uuid}:register", "failed to load: ModuleNotFoundError"),
        ("{module}:not_callable", "loaded int, expected a callable fn"),
        ("{module}:explode", "failed while registering: RuntimeError: plugin bug"),
    ],
)
def test_a_broken_entry_point_raises_naming_it(plugin_dir: tuple[Path, str], target: str, match: str) -> None:
    root, module = plugin_dir
    value = target.format(module=module, uuid=uuid.uuid4().hex)
    group = "esper.blueprints.test_broken"
    _write_distribution(root, "brokenplugin", f"[{group}]\nbroken_one = {value}\n", {module: PLUGIN_SOURCE})
    with pytest.raises(BlueprintError, match=f"entry point 'broken_one' .* in group '{group}' {match}"):
        BlueprintRegistry().load_entry_points(group)


def test_default_registry_is_built_once_with_the_builtins() -> None:
    first = default_registry()
    assert default_registry() is first
    builtins = BlueprintRegistry()
    register_builtin_blueprints(builtins)
    for topology in ("cnn", "transformer"):
        assert first.names(topology)[: len(builtins.names(topology))] == builtins.names(topology)


def _default_names() -> dict[str, list[str]]:
    registry = default_registry()
    return {topology: registry.names(topology) for topology in ("cnn", "transformer")}


def test_a_spawned_process_sees_the_same_default_names() -> None:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        child = pool.apply(_default_names)
    assert child == _default_names()
