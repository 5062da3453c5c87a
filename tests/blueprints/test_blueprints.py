"""Every built-in seed: identity at birth, shape, exact counts, gradient flow, determinism."""

from __future__ import annotations

import inspect
import types

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from esper.blueprints import (
    BlueprintError,
    BlueprintRegistry,
    cnn,
    register_builtin_blueprints,
    registry,
    transformer,
    zero_init,
)
from esper.blueprints.cnn import ConvLightSeed, group_norm_groups
from esper.blueprints.transformer import AttentionSeed, FlexAttentionSeed, LoraSeed
from esper.blueprints.zero_init import NoopSeed
from esper.contracts.shapes import SlotShape

CNN_NAMES = ["noop", "norm", "attention", "depthwise", "bottleneck", "conv_small", "conv_light", "conv_heavy"]
TRANSFORMER_NAMES = ["noop", "norm", "lora", "lora_large", "attention", "flex_attention", "mlp_small", "mlp"]
CNN_WIDTHS = (16, 32, 48, 64)
TRANSFORMER_WIDTHS = (16, 32, 64)
HEADS = 4
FLEX_WARNING = "ignore:flex_attention called without torch.compile"


@pytest.fixture(scope="module")
def builtins() -> BlueprintRegistry:
    reg = BlueprintRegistry()
    register_builtin_blueprints(reg)
    return reg


def _cnn_shape(width: int, dims: int) -> SlotShape:
    return SlotShape("cnn", width, spatial_dims=dims)


def _transformer_shape(width: int) -> SlotShape:
    return SlotShape("transformer", width, n_heads=HEADS)


def _input(shape: SlotShape, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if shape.topology == "transformer":
        size: tuple[int, ...] = (2, 7, shape.width)
    elif shape.spatial_dims == 1:
        size = (2, shape.width, 12)
    else:
        size = (2, shape.width, 5, 6)
    return torch.randn(size, generator=generator)


def _buildable_cases() -> list[tuple[str, SlotShape]]:
    cases = [(name, _cnn_shape(w, d)) for name in CNN_NAMES for w in CNN_WIDTHS for d in (1, 2)]
    for name in TRANSFORMER_NAMES:
        # flex_attention is covered by its own tests (it cannot train on a CPU-only machine).
        if name == "flex_attention":
            continue
        widths = [w for w in TRANSFORMER_WIDTHS if name != "lora_large" or w >= transformer.LORA_LARGE_RANK]
        cases += [(name, _transformer_shape(w)) for w in widths]
    return cases


CASES = _buildable_cases()
CASE_IDS = [f"{s.topology}-{n}-w{s.width}-d{s.spatial_dims}" for n, s in CASES]


def test_builtin_names_in_documented_order(builtins: BlueprintRegistry) -> None:
    assert builtins.names("cnn") == CNN_NAMES
    assert builtins.names("transformer") == TRANSFORMER_NAMES


@pytest.mark.parametrize(("name", "shape"), CASES, ids=CASE_IDS)
def test_seed_contract(builtins: BlueprintRegistry, name: str, shape: SlotShape) -> None:
    torch.manual_seed(0)
    seed = builtins.create(name, shape)
    x = _input(shape)

    out = seed(x)
    assert out.shape == x.shape
    assert torch.equal(out, x), "seed must be exactly the identity at birth"

    unique = {id(p): p for _, p in seed.named_parameters(remove_duplicate=False)}
    assert builtins.param_count(name, shape) == sum(p.numel() for p in unique.values())

    params = list(seed.parameters())
    if name == "noop":
        assert params == []
        return
    # At birth some parameter must already get gradient, or the seed could never start learning.
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    (seed(x) * weights).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)

    # Once the zero-initialised parts are non-zero, gradient reaches every parameter.
    seed.zero_grad(set_to_none=True)
    with torch.no_grad():
        for p in params:
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    out = seed(x)
    assert not torch.equal(out, x)
    (out * weights).sum().backward()
    for param_name, p in seed.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reaches {param_name}"


@pytest.mark.parametrize(
    ("name", "shape"),
    [("conv_heavy", _cnn_shape(32, 2)), ("attention", _cnn_shape(32, 1)), ("mlp", _transformer_shape(32))],
)
def test_init_is_deterministic_under_manual_seed(
    builtins: BlueprintRegistry, name: str, shape: SlotShape
) -> None:
    states = []
    for torch_seed in (3, 3, 4):
        torch.manual_seed(torch_seed)
        states.append(builtins.create(name, shape).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


@given(st.integers(min_value=1, max_value=4096))
def test_group_norm_groups_rule(channels: int) -> None:
    groups = group_norm_groups(channels)
    assert channels % groups == 0
    if channels < 32:
        assert groups == 1
    else:
        assert channels // groups >= 16
    # Largest such divisor: no bigger one keeps 16 channels per group.
    assert not any(channels % g == 0 and channels // g >= 16 for g in range(groups + 1, channels + 1))


@pytest.mark.parametrize(
    ("channels", "groups"), [(16, 1), (31, 1), (32, 2), (33, 1), (48, 3), (64, 4), (1024, 64)]
)
def test_group_norm_groups_examples(channels: int, groups: int) -> None:
    assert group_norm_groups(channels) == groups


def test_seeds_use_the_group_rule() -> None:
    assert ConvLightSeed(64, 2).norm.num_groups == 4
    assert cnn.ConvHeavySeed(48, 1).norm_hidden.num_groups == group_norm_groups(96) == 6


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_group_norm_groups_rejects_bad_channels(bad: object) -> None:
    with pytest.raises(ValueError, match="channels"):
        group_norm_groups(bad)  # type: ignore[arg-type]


def test_bad_spatial_dims_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="spatial_dims: expected 1 or 2, got 3"):
        ConvLightSeed(16, 3)


def test_noop_takes_no_constructor_arguments() -> None:
    assert list(inspect.signature(NoopSeed.__init__).parameters) == ["self"]
    with pytest.raises(TypeError):
        NoopSeed(64)  # type: ignore[call-arg]


@pytest.mark.parametrize("dims", [1, 2])
def test_conv_light_mixes_neighbouring_positions(dims: int) -> None:
    torch.manual_seed(0)
    seed = ConvLightSeed(16, dims)
    with torch.no_grad():
        seed.conv.weight.normal_()
        x = _input(_cnn_shape(16, dims))
        bumped = x.clone()
        centre = (slice(None), slice(None), 3) if dims == 1 else (slice(None), slice(None), 2, 3)
        neighbour = (slice(None), slice(None), 4) if dims == 1 else (slice(None), slice(None), 2, 4)
        bumped[centre] += 1.0
        delta = seed(bumped) - seed(x)
    # Only the centre input changed, yet the output next to it moves.
    assert delta[neighbour].abs().max() > 1e-3


def test_attention_is_causal() -> None:
    torch.manual_seed(0)
    seed = AttentionSeed(32, 4)
    with torch.no_grad():
        seed.out.weight.normal_()
        x = _input(_transformer_shape(32))
        # A random bump: a constant one would vanish under the LayerNorm.
        bump = torch.randn(x.shape[0], x.shape[-1], generator=torch.Generator().manual_seed(5))
        late = x.clone()
        late[:, -1] += bump
        early = x.clone()
        early[:, 0] += bump
        base = seed(x)
        torch.testing.assert_close(seed(late)[:, :-1], base[:, :-1], rtol=0, atol=1e-6)
        assert (seed(early)[:, -1] - base[:, -1]).abs().max() > 1e-3


def test_lora_rank_above_width_is_a_clear_error(builtins: BlueprintRegistry) -> None:
    with pytest.raises(BlueprintError, match="rank 32 is larger than the slot width 16"):
        builtins.create("lora_large", _transformer_shape(16))
    with pytest.raises(BlueprintError, match="rank 9 is larger than the slot width 8"):
        LoraSeed(8, 9)


@pytest.mark.filterwarnings(FLEX_WARNING)
def test_flex_attention_matches_sdpa_attention_with_identical_weights() -> None:
    torch.manual_seed(0)
    sdpa = AttentionSeed(64, 4)
    flex = FlexAttentionSeed(64, 4)
    x = _input(_transformer_shape(64))
    with torch.no_grad():
        assert torch.equal(flex(x), x)
        sdpa.out.weight.normal_(std=0.2)
        sdpa.out.bias.normal_(std=0.2)
        flex.load_state_dict(sdpa.state_dict())
        assert sum(p.numel() for p in flex.parameters()) == sum(p.numel() for p in sdpa.parameters())
        # Two lengths: the cached block mask must be rebuilt when the length changes.
        for length in (7, 13):
            xs = torch.randn(2, length, 64, generator=torch.Generator().manual_seed(length))
            expected = sdpa(xs)
            assert not torch.allclose(expected, xs)
            torch.testing.assert_close(flex(xs), expected, rtol=1e-5, atol=1e-5)


def test_flex_attention_blueprint_refuses_where_it_cannot_train(builtins: BlueprintRegistry) -> None:
    shape = _transformer_shape(32)
    if transformer.flex_attention_unavailable_reason() is None:
        assert isinstance(builtins.create("flex_attention", shape), FlexAttentionSeed)
        return
    assert not torch.cuda.is_available()
    with pytest.raises(BlueprintError) as info:
        builtins.create("flex_attention", shape)
    message = str(info.value)
    assert "backward on CPU" in message
    assert "use blueprint 'attention'" in message
    assert "install a CUDA build of torch" in message


def test_flex_attention_check_runs_at_creation_not_import(
    builtins: BlueprintRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    shape = _transformer_shape(32)
    monkeypatch.setattr(transformer, "_accelerator_can_train_flex", lambda: True)
    assert isinstance(builtins.create("flex_attention", shape), FlexAttentionSeed)
    monkeypatch.setattr(transformer, "_FLEX_MODULE", "torch.nn.attention.no_such_flex_module")
    with pytest.raises(BlueprintError, match=r"install torch>=2\.5 or use blueprint 'attention'"):
        builtins.create("flex_attention", shape)


def test_mlp_seeds_share_one_class(builtins: BlueprintRegistry) -> None:
    shape = _transformer_shape(16)
    small, large = builtins.create("mlp_small", shape), builtins.create("mlp", shape)
    assert type(small) is type(large) is transformer.MlpSeed
    assert (small.fc1.out_features, large.fc1.out_features) == (32, 64)


@pytest.mark.parametrize("module", [cnn, transformer, zero_init, registry])
def test_all_lists_exactly_the_public_definitions(module: types.ModuleType) -> None:
    exported = set(module.__all__)
    assert all(hasattr(module, name) for name in exported)
    defined_here = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }
    assert defined_here <= exported
