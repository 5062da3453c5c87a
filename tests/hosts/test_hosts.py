"""Host networks: shapes, the stem/segments/head chain, slots, configs, the registry."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from esper.contracts.shapes import SlotShape
from esper.hosts import (
    HOST_KINDS,
    CNNHost,
    CNNHostConfig,
    GPTHost,
    GPTHostConfig,
    HostProtocol,
    build_host,
    register_host,
)
from esper.hosts.cnn import group_count


def cnn_config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"in_channels": 1, "num_classes": 10, "widths": [4, 8, 8], "spatial_dims": 1}
    base.update(overrides)
    return base


def gpt_config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "vocab_size": 13,
        "block_size": 8,
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 4,
        "layers_per_segment": 2,
    }
    base.update(overrides)
    return base


def manual_chain(host: nn.Module, x: Tensor) -> Tensor:
    h = host.stem(x)
    for segment in host.segments:
        h = segment(h)
    return host.head(h)


def built(kind: str, config: dict[str, Any], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_host(kind, config)


def test_cnn_1d_shapes_and_pooling() -> None:
    host = built("cnn", cnn_config())
    x = torch.randn(5, 40)
    h = host.stem(x)
    assert h.shape == (5, 1, 40)
    lengths = []
    for segment in host.segments:
        h = segment(h)
        lengths.append(tuple(h.shape))
    assert lengths == [(5, 4, 20), (5, 8, 10), (5, 8, 5)]
    assert host(x).shape == (5, 10)
    # The (B, 1, L) form gives the same result as the (B, L) form.
    host.eval()
    assert torch.equal(host(x), host(x.unsqueeze(1)))


def test_cnn_1d_multichannel_and_2d_shapes() -> None:
    host_1d = built("cnn", cnn_config(in_channels=3, widths=[4, 6], pool=False))
    assert host_1d(torch.randn(2, 3, 17)).shape == (2, 10)
    host_2d = built("cnn", cnn_config(in_channels=3, widths=[4, 6], spatial_dims=2, num_classes=7))
    h = host_2d.stem(torch.randn(2, 3, 16, 12))
    h = host_2d.segments[0](h)
    assert h.shape == (2, 4, 8, 6)
    assert host_2d(torch.randn(2, 3, 16, 12)).shape == (2, 7)


@pytest.mark.parametrize(
    ("config", "x"),
    [
        (cnn_config(in_channels=2), torch.randn(3, 40)),  # (B, L) only for one channel
        (cnn_config(), torch.randn(3, 2, 40)),  # wrong channel count
        (cnn_config(spatial_dims=2), torch.randn(3, 1, 40)),  # 1-D input to a 2-D host
        (cnn_config(spatial_dims=2), torch.randn(3, 16)),  # (B, L) is never 2-D
    ],
)
def test_cnn_rejects_wrong_input_layout(config: dict[str, Any], x: Tensor) -> None:
    host = built("cnn", config)
    with pytest.raises(ValueError, match=r"CNNHost input: expected \(B, \d+, (L|H, W)\).*got shape"):
        host(x)


def test_gpt_shapes() -> None:
    host = built("gpt", gpt_config())
    idx = torch.randint(0, 13, (3, 8))
    h = host.stem(idx)
    assert h.shape == (3, 8, 16)
    for segment in host.segments:
        h = segment(h)
        assert h.shape == (3, 8, 16)
    assert host(idx).shape == (3, 8, 13)
    assert host(idx[:, :1]).shape == (3, 1, 13)
    assert len(host.segments) == 2
    assert all(len(segment) == 2 for segment in host.segments)


def test_gpt_rejects_long_or_malformed_input() -> None:
    host = built("gpt", gpt_config())
    with pytest.raises(ValueError, match=r"T=9 must be in 1\.\.block_size=8"):
        host(torch.zeros(2, 9, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"expected \(B, T\) int64 token ids.*torch\.float32"):
        host(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"expected \(B, T\) int64 token ids, got shape \(4,\)"):
        host(torch.zeros(4, dtype=torch.int64))


def test_gpt_is_causal() -> None:
    host = built("gpt", gpt_config()).eval()
    idx = torch.randint(0, 13, (2, 8), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 13
    before, after = host(idx), host(changed)
    assert torch.equal(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_blind_cnn_sees_only_its_own_position() -> None:
    blind = built("cnn", cnn_config(kernel_size=1, pool=False, norm="none"))
    seeing = built("cnn", cnn_config(kernel_size=3, pool=False, norm="none"))
    x = torch.randn(2, 1, 12)
    bumped = x.clone()
    bumped[:, :, 6] += 1.0
    for host, expected_positions in ((blind, [6]), (seeing, [3, 4, 5, 6, 7, 8, 9])):
        h, g = x, bumped
        for segment in host.segments:
            h, g = segment(h), segment(g)
        moved = (h - g).abs().amax(dim=(0, 1)) > 0
        assert moved.nonzero().flatten().tolist() == expected_positions


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_cnn_forward_equals_manual_chain(norm: str, spatial_dims: int) -> None:
    host = built("cnn", cnn_config(in_channels=2, widths=[32, 8], spatial_dims=spatial_dims, norm=norm))
    x = torch.randn(4, 2, *([8] * spatial_dims))
    # Training mode with dropout 0: batch statistics make both passes identical.
    assert torch.equal(host(x), manual_chain(host, x))
    host.eval()
    assert torch.equal(host(x), manual_chain(host, x))


def test_cnn_with_dropout_forward_equals_chain_in_eval() -> None:
    host = built("cnn", cnn_config(dropout=0.5)).eval()
    x = torch.randn(4, 40)
    assert torch.equal(host(x), manual_chain(host, x))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_gpt_forward_equals_manual_chain(dropout: float) -> None:
    host = built("gpt", gpt_config(dropout=dropout))
    idx = torch.randint(0, 13, (2, 7))
    if dropout > 0:
        host.eval()
    assert torch.equal(host(idx), manual_chain(host, idx))


def test_slot_ids_and_shapes() -> None:
    cnn = built("cnn", cnn_config(widths=[4, 8, 6], spatial_dims=2))
    assert cnn.slot_ids() == ["r0c0", "r0c1", "r0c2"]
    assert [cnn.slot_shape(s) for s in cnn.slot_ids()] == [
        SlotShape("cnn", 4, spatial_dims=2),
        SlotShape("cnn", 8, spatial_dims=2),
        SlotShape("cnn", 6, spatial_dims=2),
    ]
    gpt = built("gpt", gpt_config(n_layers=6, layers_per_segment=2, n_heads=4))
    assert gpt.slot_ids() == ["r0c0", "r0c1", "r0c2"]
    assert gpt.slot_shape("r0c2") == SlotShape("transformer", 16, n_heads=4)


@pytest.mark.parametrize("kind", ["cnn", "gpt"])
@pytest.mark.parametrize("bad", ["r0c9", "r1c0", "slot0", 0])
def test_unknown_slot_id_lists_valid_ids(kind: str, bad: Any) -> None:
    host = built(kind, cnn_config(widths=[4, 4]) if kind == "cnn" else gpt_config())
    with pytest.raises(ValueError, match=r"unknown slot id .*; valid ids: r0c0, r0c1$"):
        host.slot_shape(bad)


def test_slot_shapes_match_segment_outputs() -> None:
    host = built("cnn", cnn_config(widths=[3, 5], spatial_dims=2, in_channels=2))
    h = host.stem(torch.randn(2, 2, 8, 8))
    for slot_id, segment in zip(host.slot_ids(), host.segments, strict=True):
        h = segment(h)
        shape = host.slot_shape(slot_id)
        assert h.shape[1] == shape.width and h.dim() == 2 + shape.spatial_dims


def assert_same_architecture(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert [v.shape for v in sa.values()] == [v.shape for v in sb.values()]


def primitives_only(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and primitives_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(primitives_only(v) for v in value)
    return value is None or type(value) in (int, float, str, bool)


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        ("cnn", cnn_config(norm="group", widths=[32, 16], dropout=0.25, kernel_size=5)),
        ("cnn", cnn_config(spatial_dims=2, in_channels=3, pool=False, norm="none")),
        ("gpt", gpt_config()),
        ("gpt", gpt_config(tie_weights=False, dropout=0.1, n_layers=3, layers_per_segment=1)),
    ],
)
def test_config_round_trip(kind: str, config: dict[str, Any]) -> None:
    host = built(kind, config, seed=3)
    assert host.kind == kind
    saved = host.config()
    assert primitives_only(saved)
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded == saved
    rebuilt = built(loaded_kind := host.kind, loaded, seed=3)
    assert type(rebuilt) is HOST_KINDS[loaded_kind]
    assert rebuilt.config() == saved
    assert_same_architecture(host, rebuilt)
    for (name, p), (_, q) in zip(host.state_dict().items(), rebuilt.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


def test_different_seed_gives_different_parameters() -> None:
    a, b = built("gpt", gpt_config(), seed=0), built("gpt", gpt_config(), seed=1)
    assert not torch.equal(a.token_embedding.weight, b.token_embedding.weight)


@settings(max_examples=20, deadline=None)
@given(
    widths=st.lists(st.integers(1, 20), min_size=1, max_size=3),
    spatial_dims=st.sampled_from([1, 2]),
    kernel_size=st.sampled_from([1, 3, 5]),
    pool=st.booleans(),
    norm=st.sampled_from(["batch", "group", "none"]),
    in_channels=st.integers(1, 3),
)
def test_cnn_config_round_trip_property(
    widths: list[int], spatial_dims: int, kernel_size: int, pool: bool, norm: str, in_channels: int
) -> None:
    config = cnn_config(widths=widths, spatial_dims=spatial_dims, kernel_size=kernel_size)
    config.update(pool=pool, norm=norm, in_channels=in_channels)
    host = built("cnn", config)
    assert host.config() == CNNHostConfig(**config).model_dump()
    assert_same_architecture(host, build_host("cnn", host.config()))
    assert len(host.slot_ids()) == len(widths)
    x = torch.randn(2, in_channels, *([8] * spatial_dims))
    assert host.eval()(x).shape == (2, 10)


@pytest.mark.parametrize(
    ("kind", "config", "message"),
    [
        ("cnn", cnn_config(colour="red"), r"colour: unknown key \(valid keys: in_channels, num_classes, widths, "),
        ("cnn", cnn_config(widths="8,8"), r"widths: expected list\[int\], got str$"),
        ("cnn", cnn_config(widths=(4, 8)), r"widths: expected list\[int\], got tuple$"),
        ("cnn", cnn_config(widths=[4, "8"]), r"widths\[1\]: expected int, got str$"),
        ("cnn", cnn_config(widths=[4, 0]), r"widths\[1\]: expected a value >= 1, got 0$"),
        ("cnn", cnn_config(widths=[]), r"widths: expected at least 1 items, got \[\]$"),
        ("cnn", cnn_config(spatial_dims=3), r"spatial_dims: expected 1 or 2, got 3$"),
        ("cnn", cnn_config(spatial_dims=True), r"spatial_dims: expected 1 or 2, got bool \(True\)$"),
        ("cnn", cnn_config(in_channels=1.0), r"in_channels: expected int, got float$"),
        ("cnn", cnn_config(kernel_size=4), r"kernel_size: expected an odd int >= 1, got 4$"),
        ("cnn", cnn_config(norm="layer"), r"norm: expected 'batch', 'group' or 'none', got 'layer'$"),
        ("cnn", cnn_config(pool=1), r"pool: expected bool, got int$"),
        ("cnn", cnn_config(dropout=1.0), r"dropout: expected a value < 1.0, got 1.0$"),
        ("cnn", {"in_channels": 1, "num_classes": 2, "spatial_dims": 1}, r"widths: missing required key$"),
        ("gpt", gpt_config(layers_per_segment=3), r"layers_per_segment: must divide n_layers=4, got"),
        ("gpt", gpt_config(n_heads=3), r"n_heads: must divide d_model=16, got n_heads=3$"),
        ("gpt", gpt_config(tie_weights="yes"), r"tie_weights: expected bool, got str$"),
        ("gpt", gpt_config(vocab_size=0), r"vocab_size: expected a value >= 1, got 0$"),
    ],
)
def test_bad_config_names_the_key(kind: str, config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{kind} host config: " + message):
        build_host(kind, config)


def test_unknown_kind_lists_available_kinds() -> None:
    with pytest.raises(ValueError, match=r"unknown host kind 'resnet'; available kinds: cnn, gpt"):
        build_host("resnet", cnn_config())


def test_config_must_be_a_dict() -> None:
    with pytest.raises(ValueError, match=r"cnn host config: expected a dict, got CNNHostConfig"):
        build_host("cnn", CNNHostConfig(**cnn_config()))  # type: ignore[arg-type]


def test_host_class_needs_its_config_object() -> None:
    with pytest.raises(ValueError, match=r"CNNHost: expected a CNNHostConfig, got dict"):
        CNNHost(cnn_config())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"GPTHost: expected a GPTHostConfig, got CNNHostConfig"):
        GPTHost(CNNHostConfig(**cnn_config()))  # type: ignore[arg-type]
    assert GPTHost(GPTHostConfig(**gpt_config())).kind == "gpt"
    assert CNNHost(CNNHostConfig(**cnn_config())).kind == "cnn"


def test_registry_rejects_duplicates_and_bad_classes() -> None:
    class Other(nn.Module):
        config_class = CNNHostConfig

    with pytest.raises(ValueError, match=r"kind 'cnn' is already registered to CNNHost"):
        register_host("cnn")(Other)

    class NoConfig(nn.Module):
        pass

    with pytest.raises(ValueError, match=r"NoConfig has no config_class"):
        register_host("no_config_kind")(NoConfig)
    with pytest.raises(ValueError, match=r"expected an nn.Module subclass"):
        register_host("not_a_module_kind")(int)  # type: ignore[type-var]
    assert sorted(HOST_KINDS) == ["cnn", "gpt"]
    with pytest.raises(TypeError):
        HOST_KINDS["x"] = Other  # type: ignore[index]


def test_hosts_satisfy_protocol_and_plain_modules_do_not() -> None:
    assert isinstance(built("cnn", cnn_config()), HostProtocol)
    assert isinstance(built("gpt", gpt_config()), HostProtocol)
    assert not isinstance(nn.Linear(2, 2), HostProtocol)


def test_protocol_accepts_an_adapter_around_a_foreign_model() -> None:
    class Adapter(nn.Module):
        kind = "adapter"

        def __init__(self) -> None:
            super().__init__()
            self.segments = nn.ModuleList([nn.Linear(4, 4)])

        def stem(self, x: Tensor) -> Tensor:
            return x

        def head(self, h: Tensor) -> Tensor:
            return h

        def slot_ids(self) -> list[str]:
            return ["r0c0"]

        def slot_shape(self, slot_id: str) -> SlotShape:
            return SlotShape("transformer", 4, n_heads=1)

        def config(self) -> dict[str, Any]:
            return {}

    assert isinstance(Adapter(), HostProtocol)


def test_tied_weights_are_one_parameter() -> None:
    host = built("gpt", gpt_config())
    assert host.lm_head.weight is host.token_embedding.weight
    unique = {id(p) for p in host.parameters()}
    assert len(unique) == len(list(host.parameters()))
    total = sum(p.numel() for p in host.parameters())
    d, vocab, layers = 16, 13, 4
    per_block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    assert total == vocab * d + 8 * d + layers * per_block + 2 * d  # lm_head counted once
    state = host.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["token_embedding.weight"].data_ptr()
    # Both uses feed gradient into the same tensor.
    host(torch.randint(0, 13, (2, 6))).sum().backward()
    assert host.token_embedding.weight.grad is not None
    untied = built("gpt", gpt_config(tie_weights=False))
    assert untied.lm_head.weight is not untied.token_embedding.weight
    assert sum(p.numel() for p in untied.parameters()) == total + 13 * 16


def test_all_gpt_parameters_receive_gradient() -> None:
    host = built("gpt", gpt_config())
    host(torch.randint(0, 13, (2, 8))).logsumexp(-1).sum().backward()
    missing = [n for n, p in host.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize(
    ("width", "groups"), [(1, 1), (8, 1), (31, 1), (32, 2), (48, 3), (64, 4), (2048, 32)]
)
def test_group_norm_groups_hold_at_least_16_channels(width: int, groups: int) -> None:
    assert group_count(width) == groups


def test_group_norm_is_used_for_norm_group() -> None:
    host = built("cnn", cnn_config(widths=[64], norm="group"))
    assert isinstance(host.segments[0].norm, nn.GroupNorm)
    assert host.segments[0].norm.num_groups == 4


@pytest.mark.parametrize(
    ("kind", "config", "x"),
    [
        ("cnn", cnn_config(dropout=0.5), torch.randn(3, 40)),
        ("gpt", gpt_config(dropout=0.2), torch.randint(0, 13, (3, 8))),
    ],
)
def test_deterministic_given_seed(kind: str, config: dict[str, Any], x: Tensor) -> None:
    outputs = []
    for _ in range(2):
        host = built(kind, config, seed=7)
        torch.manual_seed(11)  # dropout masks
        outputs.append(host(x))
    assert torch.equal(outputs[0], outputs[1])
