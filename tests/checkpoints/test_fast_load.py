"""Loading builds the model on the meta device and takes the file's (memory-mapped) tensors.

What that must not change: tied weights stay one Parameter, outputs are
identical, no tensor is left on meta, the global RNG is untouched, requires_grad
flags survive, and the loaded tensors are private (writing to them never
reaches the file, and saving over the file never reaches them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from esper.checkpoints import CheckpointError, load_model, save_model
from esper.checkpoints.model_io import model_from_payload, model_payload
from esper.checkpoints.self_test import STAGES, TINY_HOSTS, staged_model
from esper.checkpoints.skeleton import (
    _SkeletonMode,
    assign_weights,
    build_skeleton,
    meta_tensors,
    uncovered_tensors,
)
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.committed_events import CommittedEvents
from esper.contracts.stages import SeedStage
from esper.hosts import CNNHost, CNNHostConfig, registry
from esper.model import MorphogeneticModel
from esper.seeds.blending import BlendGate
from esper.training.run_io import save_run

HOSTS = {host.label: host for host in TINY_HOSTS}


def every_tensor(model: nn.Module) -> dict[str, Tensor]:
    """Parameters, buffers (persistent or not) and plain tensor attributes of every module."""
    found: dict[str, Tensor] = dict(model.named_parameters(remove_duplicate=False))
    found.update(model.named_buffers(remove_duplicate=False))
    for prefix, module in model.named_modules():
        found.update({f"{prefix}.{k}": v for k, v in vars(module).items() if isinstance(v, Tensor)})
    return found


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gpt_model() -> MorphogeneticModel:
    model = staged_model(HOSTS["gpt"], SeedStage.BLENDING, AlphaAlgorithm.GATE)
    assert model.host.lm_head.weight is model.host.token_embedding.weight
    return model


# ------------------------------------------------------------ tied weights
def test_tied_weights_are_one_parameter_after_loading(tmp_path: Path) -> None:
    path = tmp_path / "gpt.pt"
    save_model(gpt_model(), path)
    host = load_model(path).host
    assert host.lm_head.weight is host.token_embedding.weight
    assert isinstance(host.lm_head.weight, nn.Parameter) and host.lm_head.weight.requires_grad
    names = [name for name, _ in host.named_parameters()]
    assert "lm_head.weight" not in names  # deduplicated like in the freshly built host


def test_training_a_loaded_gpt_updates_both_uses_of_the_tied_weight(tmp_path: Path) -> None:
    original = gpt_model()
    path = tmp_path / "gpt.pt"
    save_model(original, path)
    loaded = load_model(path)
    x = HOSTS["gpt"].example_input()
    for model in (original, loaded):
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        model(x).square().mean().backward()
        optimizer.step()
    # The one Parameter got the gradient of both uses (embedding and head), exactly as in the original.
    assert torch.equal(loaded.host.token_embedding.weight, original.host.token_embedding.weight)
    assert loaded.host.lm_head.weight is loaded.host.token_embedding.weight
    assert not torch.equal(
        loaded.host.token_embedding.weight,
        torch.load(path, weights_only=True)["state_dict"]["host.token_embedding.weight"],
    )


def test_a_checkpoint_whose_tied_tensors_differ_is_refused(tmp_path: Path) -> None:
    payload = model_payload(gpt_model())
    state = dict(payload["state_dict"])
    state["host.lm_head.weight"] = state["host.lm_head.weight"] + 1.0
    payload["state_dict"] = state
    with pytest.raises(CheckpointError, match=r"state_dict > host\.lm_head\.weight: tied to host\.token_embedding"):
        model_from_payload(payload)


# ------------------------------------------------------- identical models
@pytest.mark.parametrize("stage", STAGES, ids=lambda stage: stage.name)
def test_gpt_round_trip_gives_identical_outputs_and_no_meta_tensor(stage: SeedStage, tmp_path: Path) -> None:
    original = staged_model(HOSTS["gpt"], stage, AlphaAlgorithm.GATE)
    path = tmp_path / "gpt.pt"
    save_model(original, path)
    loaded = load_model(path)
    assert not [name for name, tensor in every_tensor(loaded).items() if tensor.is_meta]
    x = HOSTS["gpt"].example_input()
    original.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))
    assert {n: p.requires_grad for n, p in loaded.named_parameters()} == {
        n: p.requires_grad for n, p in original.named_parameters()
    }


@pytest.mark.parametrize("label", ["cnn-1d", "cnn-2d"])
def test_no_meta_tensor_remains_on_cnn_hosts(label: str, tmp_path: Path) -> None:
    for stage in (SeedStage.DORMANT, SeedStage.BLENDING, SeedStage.FOSSILIZED):
        path = tmp_path / f"{stage.name}.pt"
        save_model(staged_model(HOSTS[label], stage, AlphaAlgorithm.GATE), path)
        tensors = every_tensor(load_model(path))
        assert tensors and not [name for name, tensor in tensors.items() if tensor.is_meta]
        assert {tensor.device.type for tensor in tensors.values()} == {"cpu"}


def test_a_scheduled_prune_stays_frozen_after_loading(tmp_path: Path) -> None:
    model = staged_model(HOSTS["cnn-1d"], SeedStage.HOLDING, AlphaAlgorithm.ADD)
    slot = next(slot for slot in model.slots() if slot.seed_param_count() > 0)
    model.prune(slot.slot_id, "test", steps=3)
    path = tmp_path / "m.pt"
    save_model(model, path)
    loaded = load_model(path).slot(slot.slot_id)
    assert loaded.seed_parameters() and not any(p.requires_grad for p in loaded.seed_parameters())
    assert all(p.requires_grad for p in load_model(path).host.parameters())


# -------------------------------------------------------------------- RNG
@pytest.mark.parametrize("label", sorted(HOSTS))
def test_loading_does_not_consume_the_global_rng(label: str, tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_model(staged_model(HOSTS[label], SeedStage.TRAINING, AlphaAlgorithm.GATE), path)
    torch.manual_seed(5)
    expected = torch.rand(8)
    torch.manual_seed(5)
    load_model(path)
    assert torch.equal(torch.rand(8), expected)


# ------------------------------------------------- private mapped tensors
def test_writing_to_loaded_parameters_does_not_change_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_model(staged_model(HOSTS["cnn-2d"], SeedStage.BLENDING, AlphaAlgorithm.GATE), path)
    digest = file_digest(path)
    first = load_model(path)
    saved = {key: value.clone() for key, value in first.state_dict().items()}
    with torch.no_grad():
        for param in first.parameters():
            param.add_(1.0)
    assert file_digest(path) == digest
    again = load_model(path).state_dict()
    assert all(torch.equal(again[key], saved[key]) for key in saved)
    assert not torch.equal(first.state_dict()["host.classifier.weight"], saved["host.classifier.weight"])


def test_saving_over_the_file_leaves_a_loaded_model_alone(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_model(staged_model(HOSTS["cnn-1d"], SeedStage.TRAINING, AlphaAlgorithm.ADD), path)
    loaded = load_model(path)
    before = {key: value.clone() for key, value in loaded.state_dict().items()}
    other = staged_model(HOSTS["cnn-1d"], SeedStage.TRAINING, AlphaAlgorithm.ADD, seed=1)
    save_model(other, path)  # atomic replace: a new file, the mapped one is untouched
    assert all(torch.equal(loaded.state_dict()[key], before[key]) for key in before)
    assert torch.equal(load_model(path).state_dict()["host.classifier.weight"], other.host.classifier.weight)
    save_model(loaded, path)  # a model saved over the very file its tensors are mapped from
    again = load_model(path).state_dict()
    assert all(torch.equal(again[key], before[key]) for key in before)


def test_a_payload_model_does_not_share_tensors_unless_asked() -> None:
    model = staged_model(HOSTS["cnn-1d"], SeedStage.TRAINING, AlphaAlgorithm.ADD)
    payload = model_payload(model)
    copy = model_from_payload(payload)
    shared = model_from_payload(payload, share_tensors=True)
    weight = model.host.classifier.weight
    assert copy.host.classifier.weight.data_ptr() != weight.data_ptr()
    assert shared.host.classifier.weight.data_ptr() == weight.data_ptr()
    assert torch.equal(copy.host.classifier.weight, weight)


def test_a_run_checkpoint_model_is_usable_for_training(tmp_path: Path) -> None:
    host = HOSTS["cnn-2d"]
    model = staged_model(host, SeedStage.BLENDING, AlphaAlgorithm.GATE)
    path = tmp_path / "run.pt"
    no_events = CommittedEvents(bytes=0, lines=0, sha256=hashlib.sha256().hexdigest())
    # Only the model part is read here (load_run also validates the config and run state, left empty).
    save_run(path, config={}, model=model, run_state={}, controller={}, wall_seconds=1.0, events=no_events)
    loaded = load_model(path)
    assert not [name for name, tensor in every_tensor(loaded).items() if tensor.is_meta]
    optimizer = torch.optim.Adam([p for p in loaded.parameters() if p.requires_grad], lr=0.1)
    loaded.train()
    loaded(host.example_input()).square().mean().backward()
    optimizer.step()
    assert not torch.equal(loaded.host.classifier.weight, model.host.classifier.weight)
    assert torch.equal(load_model(path).host.classifier.weight, model.host.classifier.weight)


# ------------------------------------------------------ skeleton fallbacks
class _BufferedHost(CNNHost):
    """A CNN host with a non-persistent buffer (not in the state_dict) that its head uses."""

    def __init__(self, cfg: CNNHostConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("logit_scale", torch.full((cfg.num_classes,), 3.0), persistent=False)

    def head(self, h: Tensor) -> Tensor:
        return super().head(h) * self.logit_scale


@pytest.fixture
def buffered_kind(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # Registered only for this test: other tests check the set of registered kinds.
    kind = "test-buffered-cnn"
    monkeypatch.setattr(_BufferedHost, "kind", kind, raising=False)
    monkeypatch.setitem(registry._HOST_KINDS, kind, _BufferedHost)
    yield kind


def test_a_host_with_a_non_persistent_buffer_is_built_for_real(buffered_kind: str, tmp_path: Path) -> None:
    config = {"in_channels": 1, "num_classes": 3, "widths": [4, 4], "spatial_dims": 1, "pool": False}
    model = MorphogeneticModel(_BufferedHost(CNNHostConfig.model_validate(config)))
    path = tmp_path / "m.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.host.kind == buffered_kind
    assert torch.equal(loaded.host.logit_scale, torch.full((3,), 3.0))
    x = torch.randn(2, 1, 6)
    model.eval(), loaded.eval()
    assert torch.equal(loaded(x), model(x))


class _ReadsAValue(nn.Module):
    """Its constructor reads a tensor's value, which meta tensors do not have."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.start = float(self.linear.bias.sum().item())


class _HasTensorAttribute(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.offset = torch.ones(2)  # neither a parameter nor a buffer


def test_build_skeleton_builds_on_meta_when_it_can() -> None:
    model, skeleton = build_skeleton(lambda: nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)))
    assert skeleton and all(tensor.is_meta for tensor in every_tensor(model).values())


@pytest.mark.parametrize("module_class", [_ReadsAValue, _HasTensorAttribute])
def test_build_skeleton_falls_back_to_a_real_build(module_class: type[nn.Module]) -> None:
    model, skeleton = build_skeleton(module_class)
    assert not skeleton and not any(tensor.is_meta for tensor in every_tensor(model).values())


def test_uncovered_tensors_names_what_the_state_dict_does_not_carry() -> None:
    module = nn.Module()
    module.inner = _HasTensorAttribute()
    module.register_buffer("kept", torch.zeros(1))
    module.register_buffer("scratch", torch.zeros(1), persistent=False)
    assert sorted(uncovered_tensors(module)) == ["inner.offset", "scratch"]


def test_assign_weights_refuses_to_leave_a_meta_tensor() -> None:
    with torch.device("meta"):
        model = nn.Linear(2, 2)
    model.register_buffer("scratch", torch.zeros(1, device="meta"), persistent=False)
    weights = {"weight": torch.ones(2, 2), "bias": torch.zeros(2)}
    with pytest.raises(RuntimeError, match=r"left tensors on the meta device.*scratch"):
        assign_weights(model, weights, [])
    assert meta_tensors(model) == ["scratch"]


# ------------------------------------------------------------ skipped initialisers, direct assignment
def test_skeleton_skips_initialisers_but_not_metadata_changes() -> None:
    scalar = torch.empty((), device="meta")
    with _SkeletonMode():
        # Run for real, kaiming_uniform_ refuses a 0-dim tensor; on meta it is skipped outright.
        assert nn.init.kaiming_uniform_(scalar) is scalar
        assert nn.init.kaiming_uniform_(tensor=scalar) is scalar
        layer = nn.Linear(3, 2)
        layer.requires_grad_(False)  # changes a flag, not values: must still happen
    assert layer.weight.is_meta and not layer.weight.requires_grad
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.kaiming_uniform_(torch.empty(()))


def test_blend_gate_on_meta_has_no_storage_and_off_meta_is_initialised() -> None:
    with _SkeletonMode():
        skeleton = BlendGate(8, channel_dim=1)
    assert all(p.is_meta for p in skeleton.parameters())
    first, second = BlendGate(8, channel_dim=1), BlendGate(8, channel_dim=1)
    assert not any(p.is_meta for p in first.parameters())
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))
    assert torch.count_nonzero(first.hidden.weight) > 0 and torch.count_nonzero(first.hidden.bias) == 0


def _kinds(model: nn.Module) -> dict[str, tuple[str, bool, torch.dtype, tuple[int, ...]]]:
    named = {n: ("param", t.requires_grad, t.dtype, tuple(t.shape)) for n, t in model.named_parameters()}
    named.update({n: ("buffer", t.requires_grad, t.dtype, tuple(t.shape)) for n, t in model.named_buffers()})
    return named


@pytest.mark.parametrize("stage", [SeedStage.BLENDING, SeedStage.FOSSILIZED])
@pytest.mark.parametrize("host", sorted(HOSTS))
def test_direct_assignment_rebuilds_every_parameter_and_buffer_as_it_was(host: str, stage: SeedStage) -> None:
    model = staged_model(HOSTS[host], stage, AlphaAlgorithm.GATE)
    loaded = model_from_payload(model_payload(model))
    assert _kinds(loaded) == _kinds(model)  # same names, kinds, requires_grad, dtypes and shapes
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


class _CustomLoading(nn.Linear):
    """Has its own loading step, so it must go through load_state_dict."""

    calls = 0

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        type(self).calls += 1
        super()._load_from_state_dict(*args, **kwargs)


def test_a_module_with_its_own_loading_step_goes_through_load_state_dict() -> None:
    with _SkeletonMode():
        model = nn.Sequential(nn.Linear(2, 2), _CustomLoading(2, 2))
    weights = {key: torch.ones(tensor.shape) for key, tensor in model.state_dict().items()}
    before = _CustomLoading.calls
    assign_weights(model, weights, [])
    assert _CustomLoading.calls == before + 1
    assert not meta_tensors(model) and torch.equal(model[1].weight, torch.ones(2, 2))


class _DrawsOnCpu(nn.Module):
    """A constructor that draws into a tensor on an explicit real device (no generator given)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.register_buffer("noise", torch.empty(4, device="cpu").normal_())


def test_a_constructor_drawing_on_a_real_device_is_built_for_real_from_a_throwaway_generator() -> None:
    before = torch.get_rng_state()
    model, skeleton = build_skeleton(_DrawsOnCpu)
    assert not skeleton and not model.noise.is_meta and not model.linear.weight.is_meta
    assert torch.equal(torch.get_rng_state(), before)
    plain, skeleton = build_skeleton(lambda: nn.Linear(3, 3))
    assert skeleton and plain.weight.is_meta
    assert torch.equal(torch.get_rng_state(), before)
