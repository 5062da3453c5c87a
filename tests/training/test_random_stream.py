"""RunStream: torch's random draws go to the caller's generators, exactly as they would go to the global one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esper.random_stream import (
    GlobalGeneratorTouched,
    RunStream,
    UnroutedRandomOp,
    discarded_draws,
    draws_in_forward,
    global_generators_untouched,
    seeded_draws,
)

SEED = 11
_ATTENTION = nn.MultiheadAttention(4, 2, dropout=0.1)


def _stream(seed: int = SEED) -> tuple[RunStream, torch.Generator]:
    generator = torch.Generator().manual_seed(seed)

    def generator_for(device: torch.device) -> torch.Generator:
        assert device.type == "cpu", device
        return generator

    return RunStream(generator_for), generator


@contextmanager
def _seeded_process(seed: int = SEED) -> Iterator[None]:
    """The old way, for reference only: the process's own generator, seeded (restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _both(make: Callable[[], list[torch.Tensor]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """`make()` drawing from the stream, and `make()` drawing from a process seeded the same way."""
    stream, _ = _stream()
    before = torch.get_rng_state()
    with stream:
        routed = make()
    assert torch.equal(torch.get_rng_state(), before), "the stream moved the global generator"
    with _seeded_process():
        reference = make()
    return routed, reference


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _weights(module: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in module.state_dict().values()]


def test_module_initialisers_draw_what_a_seeded_process_draws_and_leave_it_alone() -> None:
    def build() -> list[torch.Tensor]:
        modules = [
            nn.Linear(5, 4),
            nn.Conv1d(3, 6, 3),
            nn.Conv2d(2, 3, 3),
            nn.Embedding(7, 4),
            nn.MultiheadAttention(8, 2),
            nn.LSTM(4, 6),
            nn.TransformerEncoderLayer(8, 2, 16),
        ]
        return [w for m in modules for w in _weights(m)]

    routed, reference = _both(build)
    assert _same(routed, reference)


@pytest.mark.parametrize(
    "draw",
    [
        lambda: nn.init.kaiming_uniform_(torch.empty(4, 5)),
        lambda: nn.init.kaiming_normal_(torch.empty(4, 5)),
        lambda: nn.init.xavier_uniform_(torch.empty(4, 5)),
        lambda: nn.init.xavier_normal_(torch.empty(4, 5)),
        lambda: nn.init.uniform_(torch.empty(4, 5), -2.0, 3.0),
        lambda: nn.init.normal_(torch.empty(4, 5)),
        lambda: nn.init.trunc_normal_(torch.empty(4, 5)),
        lambda: nn.init.orthogonal_(torch.empty(4, 5)),
        lambda: nn.init.sparse_(torch.empty(6, 5), 0.5),
        lambda: torch.empty(9).uniform_(),
        lambda: torch.empty(9).normal_(),
        lambda: torch.empty(9).bernoulli_(0.3),
        lambda: torch.full((9,), 0.4).bernoulli(),
        lambda: torch.empty(9).random_(0, 10),
        lambda: torch.empty(9).exponential_(),
        lambda: torch.empty(9).geometric_(0.3),
        lambda: torch.empty(9).cauchy_(),
        lambda: torch.empty(9).log_normal_(),
        lambda: torch.full((3, 4), 0.25).multinomial(2),
        lambda: torch.rand(3, 4),
        lambda: torch.randn(3, 4),
        lambda: torch.randint(0, 9, (5,)),
        lambda: torch.randperm(8),
        lambda: torch.normal(torch.zeros(4), torch.ones(4)),
        lambda: torch.normal(0.0, 1.0, size=(4,)),
        lambda: torch.bernoulli(torch.full((6,), 0.5)),
        lambda: torch.multinomial(torch.ones(5), 3),
        lambda: torch.poisson(torch.full((5,), 3.0)),
        lambda: torch.poisson(torch.full((5,), 3.0), None),
        lambda: torch.rand_like(torch.empty(4)),
        lambda: torch.randn_like(torch.empty(4)),
        lambda: torch.randint_like(torch.empty(4), 10),
        lambda: torch.distributions.Gamma(torch.ones(3), torch.ones(3)).sample(),
        lambda: torch.distributions.Normal(torch.zeros(3), torch.ones(3)).sample(),
        lambda: torch.rrelu(torch.randn(6), training=True),
    ],
)
def test_random_ops_without_a_generator_take_the_stream(draw: Callable[[], torch.Tensor]) -> None:
    routed, reference = _both(lambda: [draw(), torch.rand(2)])  # the stream continues afterwards
    assert _same(routed, reference)


def test_an_explicit_generator_is_kept() -> None:
    stream, generator = _stream()
    own = torch.Generator().manual_seed(99)
    before = generator.get_state()
    with stream:
        value = torch.randn(3, generator=own)
    assert torch.equal(value, torch.randn(3, generator=torch.Generator().manual_seed(99)))
    assert torch.equal(generator.get_state(), before)


def test_meta_tensors_draw_nothing() -> None:
    stream, generator = _stream()
    before = generator.get_state()
    with stream:
        nn.Linear(4, 4, device="meta")
        torch.randn(3, device="meta")
    assert torch.equal(generator.get_state(), before)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("call", ["functional", "module", "torch"])
def test_dropout_is_bit_identical_values_and_gradients(call: str, p: float, inplace: bool) -> None:
    base = torch.randn(4, 33, generator=torch.Generator().manual_seed(1))

    def run() -> list[torch.Tensor]:
        x = base.clone().requires_grad_()
        y = x * 1.5  # a non-leaf, so the in-place form is legal under autograd
        if call == "functional":
            out = F.dropout(y, p, True, inplace)
        elif call == "module":
            out = nn.Dropout(p, inplace=inplace)(y)
        else:
            out = (torch.dropout_ if inplace else torch.dropout)(y, p, True)
        (out * torch.arange(33.0)).sum().backward()
        assert x.grad is not None
        return [out.detach(), x.grad, torch.rand(2)]

    routed, reference = _both(run)
    assert _same(routed, reference)


def test_dropout_that_draws_nothing_is_torchs_own() -> None:
    stream, generator = _stream()
    before = generator.get_state()
    x = torch.randn(5)
    with stream:
        assert torch.equal(F.dropout(x, 0.5, training=False), x)
        assert torch.equal(F.dropout(x, 0.0), x)
        with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
            F.dropout(x, 1.5)
    assert torch.equal(generator.get_state(), before)


@pytest.mark.parametrize("scale", [None, 0.3, -0.2])
@pytest.mark.parametrize(("causal", "mask"), [(True, None), (False, None), (False, "bool"), (False, "float")])
def test_attention_dropout_is_bit_identical_values_and_gradients(
    causal: bool, mask: str | None, scale: float | None
) -> None:
    source = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=source) for _ in range(3))
    masks = {
        None: None,
        "bool": torch.rand(5, 5, generator=source) > 0.3,
        "float": torch.randn(5, 5, generator=source),
    }

    def run() -> list[torch.Tensor]:
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        out = F.scaled_dot_product_attention(
            *inputs, attn_mask=masks[mask], dropout_p=0.3, is_causal=causal, scale=scale
        )
        out.pow(2).sum().backward()
        return [out.detach(), *(t.grad for t in inputs if t.grad is not None), torch.rand(2)]

    routed, reference = _both(run)
    assert len(routed) == 5 and _same(routed, reference)


def test_rrelu_in_training_is_bit_identical() -> None:
    def run() -> list[torch.Tensor]:
        x = torch.randn(10, generator=torch.Generator().manual_seed(4))
        return [F.rrelu(x, training=True), F.rrelu(x.clone(), training=True, inplace=True), nn.RReLU()(x)]

    routed, reference = _both(run)
    assert _same(routed, reference)


@pytest.mark.parametrize(
    ("call", "shape"),
    [
        ("dropout1d", (4, 6, 9)),
        ("dropout1d", (6, 9)),  # unbatched: a batch dimension is added and removed
        ("module1d", (4, 6, 9)),
        ("dropout2d", (4, 6, 3, 3)),
        ("module2d", (4, 6, 3, 3)),
        ("dropout3d", (3, 6, 2, 2, 2)),
        ("dropout3d", (6, 2, 2, 2)),
        ("feature_dropout", (4, 6, 5)),
    ],
)
@pytest.mark.parametrize("p", [0.3, 1.0])
@pytest.mark.parametrize("inplace", [False, True])
def test_channel_dropout_is_bit_identical_values_and_gradients(
    call: str, shape: tuple[int, ...], p: float, inplace: bool
) -> None:
    base = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    weights = torch.arange(float(base.numel())).reshape(shape)

    def run() -> list[torch.Tensor]:
        x = base.clone().requires_grad_()
        y = x * 1.5  # a non-leaf, so the in-place form is legal under autograd
        if call == "module1d":
            out = nn.Dropout1d(p, inplace=inplace)(y)
        elif call == "module2d":
            out = nn.Dropout2d(p, inplace=inplace)(y)
        elif call == "feature_dropout":
            out = (torch.feature_dropout_ if inplace else torch.feature_dropout)(y, p, True)
        else:
            out = getattr(F, call)(y, p, True, inplace)
        (out * weights).sum().backward()
        assert x.grad is not None
        return [out.detach(), x.grad, torch.rand(2)]

    routed, reference = _both(run)
    assert _same(routed, reference)
    assert not torch.equal(routed[0], base * 1.5) or p == 0.0  # it dropped something


@pytest.mark.parametrize(
    ("name", "op"),
    [
        ("alpha_dropout", lambda x: F.alpha_dropout(x, 0.5, training=True)),
        ("feature_alpha_dropout", lambda x: F.feature_alpha_dropout(x, 0.5, training=True)),
        ("native_dropout", lambda x: torch.native_dropout(x, 0.5, True)),
        ("gumbel_softmax", lambda x: F.gumbel_softmax(x)),
        ("fractional_max_pool2d", lambda x: F.fractional_max_pool2d(x, 2, output_size=2)),
        ("fractional_max_pool3d", lambda x: F.fractional_max_pool3d(x[None], 2, output_size=1, return_indices=True)),
        ("multi_head_attention_forward", lambda x: _ATTENTION(x[0, :, :, 0], x[0, :, :, 0], x[0, :, :, 0])),
    ],
)
def test_an_op_the_stream_cannot_route_is_refused_by_name(name: str, op: Callable[[torch.Tensor], object]) -> None:
    x = torch.randn(2, 3, 4, 4)
    stream, generator = _stream()
    before, global_before = generator.get_state(), torch.get_rng_state()
    with stream, pytest.raises(UnroutedRandomOp, match=rf"\.{name}\S* .*takes no generator argument"):
        op(x)
    assert torch.equal(generator.get_state(), before) and torch.equal(torch.get_rng_state(), global_before)


def test_the_same_ops_that_draw_nothing_run() -> None:
    stream, _ = _stream()
    x = torch.randn(2, 3, 4, 4)
    with stream:
        assert torch.equal(F.dropout2d(x, 0.5, training=False), x)
        assert torch.equal(F.alpha_dropout(x, 0.5), x)  # training=False by default
        attention = nn.MultiheadAttention(4, 2, dropout=0.1).eval()
        attention(x[0, :, :, 0], x[0, :, :, 0], x[0, :, :, 0])
        F.fractional_max_pool2d(x, 2, output_size=2, _random_samples=torch.rand(2, 3, 2))


def test_the_guard_names_a_step_that_drew_from_the_global_generator() -> None:
    with (
        pytest.raises(GlobalGeneratorTouched, match="the step drew from torch's global random generator"),
        global_generators_untouched("the step"),
    ):
        torch.randn(1)
    with global_generators_untouched("a step with its own generator"):
        torch.randn(1, generator=torch.Generator())
    with pytest.raises(KeyError), global_generators_untouched("a failing step"):  # its own error, not the guard's
        torch.randn(1)
        raise KeyError("own")


def test_draws_in_forward_sees_dropout_attention_dropout_and_rrelu() -> None:
    assert not draws_in_forward(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0)))
    assert draws_in_forward(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.2)))
    assert draws_in_forward(nn.Sequential(nn.Dropout2d(0.2)))
    assert not draws_in_forward(nn.MultiheadAttention(4, 2))
    assert draws_in_forward(nn.MultiheadAttention(4, 2, dropout=0.1))
    assert draws_in_forward(nn.Sequential(nn.RReLU()))


def test_seeded_draws_are_a_seeded_process_and_discarded_draws_touch_nothing() -> None:
    before = torch.get_rng_state()
    with seeded_draws(5):
        seeded = _weights(nn.Linear(3, 3))
    with discarded_draws():
        nn.Linear(3, 3)
    assert torch.equal(torch.get_rng_state(), before)
    with _seeded_process(5):
        assert _same(seeded, _weights(nn.Linear(3, 3)))
