"""Routing torch's random draws to generators the caller owns, without touching the process's.

Many of torch's random draws have no way to receive a generator from the code
that wants them: a module's constructor initialises its weights through
`torch.nn.init`, and `nn.Dropout` calls `F.dropout`, neither passing one. Left
alone they draw from torch's global default generator, so two runs in one
process (or a run and the code around it) would share a stream.

`RunStream` is a `TorchFunctionMode`: while it is active, every torch call
passes through it first. A random op called without a generator gets one, the
caller's for the op's device, and draws exactly what it would have drawn from
a global generator in the same state. Ops that draw but take no generator
argument are either computed the same way with one (`F.dropout`,
`torch.dropout`, the channel-wise `F.dropout1d/2d/3d`, `F.rrelu`, `F.scaled_dot_product_attention` with dropout; checked
bit-identical, values and gradients, in the tests) or refused with
`UnroutedRandomOp` naming the op, never left to draw from the global
generator. Anything this module does not know about is caught afterwards by
`global_generators_untouched`, which a run wraps around each of its steps.

Cost: the mode adds a Python call to every torch call made while it is
active. Runs keep it off the hot path: it is active while models are built
and seeds germinated, and during a training pass only when the model has
modules that draw in their forward (`draws_in_forward`: dropout with p > 0,
multi-head attention with dropout, RReLU). Such a training pass pays the
Python call per torch op (a few microseconds each: noticeable on tiny models,
small next to the arithmetic on large ones); evaluation passes never do.
The mode stack is per thread, so a mode entered in one thread routes that
thread's draws only.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode, resolve_name

__all__ = [
    "GENERATOR_OPS",
    "GeneratorFor",
    "GlobalGeneratorTouched",
    "RunStream",
    "UnroutedRandomOp",
    "discarded_draws",
    "draws_in_forward",
    "global_generators_untouched",
    "seeded_draws",
]

GeneratorFor = Callable[[torch.device], torch.Generator]


class UnroutedRandomOp(RuntimeError):
    """A random op that takes no generator ran inside a RunStream: it would have drawn from the global one."""


class GlobalGeneratorTouched(RuntimeError):
    """Code that should draw only from its own generators advanced torch's global generator."""


# Ops whose draws take a `generator` argument. Keyword-only unless listed in _POSITIONAL.
_TORCH_DRAWS = (
    "rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial", "poisson", "binomial",
    "rand_like", "randn_like", "randint_like", "rrelu", "rrelu_", "_standard_gamma", "_sample_dirichlet",
)  # fmt: skip
_TENSOR_DRAWS = (
    "uniform_", "normal_", "bernoulli_", "bernoulli", "random_", "exponential_", "geometric_", "cauchy_",
    "log_normal_", "multinomial",
)  # fmt: skip
# Where a generator may also be passed by position (index into args).
_POSITIONAL = {"poisson": 1, "binomial": 2, "rrelu": 4, "rrelu_": 4, "_standard_gamma": 1, "_sample_dirichlet": 1}


def _init_draws() -> list[Callable[..., Any]]:
    # torch.nn.init's initialisers dispatch to the mode themselves (passing `generator=None` by
    # keyword) and then run with the mode off: they must get the generator at that first call.
    return [
        function
        for name, function in vars(nn.init).items()
        if callable(function)
        and name.endswith("_")
        and not name.startswith("_")
        and "generator" in inspect.signature(function).parameters
    ]


_ROUTED: dict[Any, int | None] = {
    **{getattr(torch, name): _POSITIONAL.get(name) for name in _TORCH_DRAWS},
    **{getattr(torch.Tensor, name): None for name in _TENSOR_DRAWS},
    **{function: None for function in _init_draws()},
}
# The random ops a RunStream hands a generator (for other modes that must recognise draws).
GENERATOR_OPS = frozenset(_ROUTED)


# ------------------------------------------------------------ explicit forms
def _dropout(input: torch.Tensor, p: float, inplace: bool, generator: torch.Generator) -> torch.Tensor:
    """Training-mode dropout with `p` in (0, 1], computed as torch's CPU kernel computes it.

    The same ops in the same order (a Bernoulli(1 - p) mask divided by 1 - p,
    then one multiplication) give bit-identical values and gradients to
    `F.dropout` drawing from a generator in the same state.
    """
    if p == 1.0:
        zero = torch.zeros((), dtype=input.dtype, device=input.device)
        return input.mul_(zero) if inplace else input * zero
    noise = torch.empty_like(input).bernoulli_(1.0 - p, generator=generator)
    noise.div_(1.0 - p)
    return input.mul_(noise) if inplace else input * noise


def _feature_dropout(input: torch.Tensor, p: float, inplace: bool, generator: torch.Generator) -> torch.Tensor:
    """Channel-wise dropout (`Dropout1d/2d/3d`), as torch's kernel computes it.

    One Bernoulli(1 - p) draw per (sample, channel), shaped (N, C, 1, ...) so it
    broadcasts over the positions, divided by 1 - p, then one multiplication:
    bit-identical to `torch.feature_dropout` drawing from a generator in the same state.
    """
    if p == 1.0:
        zero = torch.zeros((), dtype=input.dtype, device=input.device)
        return input.mul_(zero) if inplace else input * zero
    shape = (input.size(0), input.size(1), *([1] * (input.dim() - 2)))
    noise = input.new_empty(shape).bernoulli_(1.0 - p, generator=generator)
    noise.div_(1.0 - p)
    return input.mul_(noise) if inplace else input * noise


def _attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout_p: float,
    is_causal: bool,
    scale: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """`scaled_dot_product_attention` with dropout, as torch's reference ("math") kernel computes it.

    With dropout torch runs that kernel on CPU (its fused CPU kernel takes no
    dropout): q and k each scaled by the square root of the scale, the mask
    added, a softmax that gives fully masked rows zeros, dropout, then the
    product with v. Bit-identical values and gradients there; on CUDA this
    replaces the fused kernels (slower, more memory) so that the run's own
    generator draws the mask.
    """
    if is_causal and attn_mask is not None:
        raise RuntimeError("scaled_dot_product_attention: an explicit attn_mask cannot be given with is_causal=True")
    negative = scale is not None and scale < 0
    softmax_scale = (abs(scale) if negative else scale) if scale is not None else 1.0 / math.sqrt(query.size(-1))
    factor = math.sqrt(softmax_scale)
    query = query * (0.0 - factor if negative else factor)
    mask = attn_mask
    if is_causal:
        mask = torch.ones(query.size(-2), key.size(-2), dtype=torch.bool, device=query.device).tril()
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros_like(mask, dtype=query.dtype).masked_fill_(mask.logical_not(), -math.inf)
    scores = torch.matmul(query, key.transpose(-2, -1) * factor)
    if mask is not None:
        scores.add_(mask)
    weights = torch._safe_softmax(scores, -1)
    return torch.matmul(_dropout(weights, dropout_p, False, generator), value)


# ------------------------------------------------------------ argument access
Binder = Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]


def _binder(names: tuple[str, ...], defaults: dict[str, Any]) -> Binder:
    """Arguments by name for a function whose Python signature torch does not expose (C++ bindings)."""

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**defaults, **dict(zip(names, args, strict=False)), **kwargs}

    return bind


def _signature_binder(function: Callable[..., Any]) -> Binder:
    signature = inspect.signature(function)

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    return bind


_TRAIN_ARGS = _binder(("input", "p", "train"), {})
_POOL_ARGS = _binder(
    ("input", "kernel_size", "output_size", "output_ratio", "return_indices", "_random_samples"),
    {"_random_samples": None},
)
_SDPA_ARGS = _binder(
    ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"),
    {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False},
)

Handler = Callable[["RunStream", Any, tuple[Any, ...], dict[str, Any]], Any]


def _refuse(func: Any, why: str) -> UnroutedRandomOp:
    name = resolve_name(func) or repr(func)
    return UnroutedRandomOp(
        f"{name} {why} and takes no generator argument: inside a RunStream it would "
        "draw from torch's global generator instead of the run's own. Use a module whose draws take a "
        "generator (nn.Dropout, F.dropout, scaled_dot_product_attention), or disable the op's randomness"
    )


def _functional_dropout(stream: RunStream, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    bound = _F_DROPOUT_ARGS(args, kwargs)
    input, p = bound["input"], bound["p"]
    if not bound["training"] or not 0.0 < p <= 1.0 or input.numel() == 0:
        return func(*args, **kwargs)  # draws nothing (or raises torch's own error for a bad p)
    return _dropout(input, p, bound["inplace"], stream.generator(input.device))


def _torch_dropout(stream: RunStream, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    bound = _TRAIN_ARGS(args, kwargs)
    input, p = bound["input"], bound["p"]
    if not bound["train"] or not 0.0 < p <= 1.0 or input.numel() == 0:
        return func(*args, **kwargs)
    return _dropout(input, p, func is torch.dropout_, stream.generator(input.device))


# F.dropout1d and F.dropout3d add a batch dimension to an unbatched input (2-D, 4-D) and
# remove it afterwards; dropout1d refuses other ranks. F.dropout2d takes the input as it is.
_FEATURE_BATCHED_DIM = {F.dropout1d: 3, F.dropout2d: None, F.dropout3d: 5}


def _functional_feature_dropout(stream: RunStream, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    bound = _F_FEATURE_ARGS[func](args, kwargs)
    input, p, inplace = bound["input"], bound["p"], bound["inplace"]
    if not bound["training"] or not 0.0 < p <= 1.0 or input.numel() == 0:
        return func(*args, **kwargs)  # draws nothing (or raises torch's own error)
    if func is F.dropout1d and input.dim() not in (2, 3):
        return func(*args, **kwargs)  # torch's own error for the rank
    batched_dim = _FEATURE_BATCHED_DIM[func]
    unbatched = batched_dim is not None and input.dim() == batched_dim - 1
    if unbatched:
        input = input.unsqueeze_(0) if inplace else input.unsqueeze(0)
    result = _feature_dropout(input, p, inplace, stream.generator(input.device))
    if unbatched:
        result = result.squeeze_(0) if inplace else result.squeeze(0)
    return result


def _torch_feature_dropout(stream: RunStream, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    bound = _TRAIN_ARGS(args, kwargs)
    input, p = bound["input"], bound["p"]
    if not bound["train"] or not 0.0 < p <= 1.0 or input.numel() == 0 or input.dim() < 2:
        return func(*args, **kwargs)
    return _feature_dropout(input, p, func is torch.feature_dropout_, stream.generator(input.device))


def _functional_rrelu(stream: RunStream, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    bound = _F_RRELU_ARGS(args, kwargs)
    input = bound["input"]
    if not bound["training"]:
        return func(*args, **kwargs)
    # What F.rrelu calls, with the generator it does not pass (F.rrelu_ is torch.rrelu_, routed as it is).
    op = torch.rrelu_ if bound["inplace"] else torch.rrelu
    return op(input, bound["lower"], bound["upper"], True, generator=stream.generator(input.device))


def _sdpa(stream: RunStream, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    bound = _SDPA_ARGS(args, kwargs)
    if not bound["dropout_p"] > 0.0:
        return func(*args, **kwargs)
    query = bound["query"]
    if bound["enable_gqa"] or query.is_nested:
        raise _refuse(func, "with dropout_p > 0 on grouped-query or nested inputs draws its mask internally")
    return _attention(
        query,
        bound["key"],
        bound["value"],
        bound["attn_mask"],
        bound["dropout_p"],
        bound["is_causal"],
        bound["scale"],
        stream.generator(query.device),
    )


def _refuse_when(bind: Binder, draws: Callable[[dict[str, Any]], bool], why: str) -> Handler:
    def handler(stream: RunStream, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if draws(bind(args, kwargs)):
            raise _refuse(func, why)
        return func(*args, **kwargs)

    return handler


def _training_dropout(bound: dict[str, Any]) -> bool:
    return bool(bound["training"]) and bound["p"] > 0.0


def _train_dropout(bound: dict[str, Any]) -> bool:
    # native_dropout reads train=None as training.
    return bound["train"] is not False and bound["p"] > 0.0


_F_DROPOUT_ARGS = _signature_binder(F.dropout)
_F_RRELU_ARGS = _signature_binder(F.rrelu)
_F_FEATURE_ARGS = {function: _signature_binder(function) for function in _FEATURE_BATCHED_DIM}
_HANDLERS: dict[Any, Handler] = {
    F.dropout: _functional_dropout,
    torch.dropout: _torch_dropout,
    torch.dropout_: _torch_dropout,
    F.scaled_dot_product_attention: _sdpa,
    **{function: _functional_feature_dropout for function in _FEATURE_BATCHED_DIM},
    torch.feature_dropout: _torch_feature_dropout,
    torch.feature_dropout_: _torch_feature_dropout,
    **{
        function: _refuse_when(_signature_binder(function), _training_dropout, "in training with p > 0 draws a mask")
        for function in (F.alpha_dropout, F.feature_alpha_dropout)
    },
    **{
        function: _refuse_when(_TRAIN_ARGS, _train_dropout, "in training with p > 0 draws a mask")
        for function in (
            torch.alpha_dropout, torch.alpha_dropout_,
            torch.feature_alpha_dropout, torch.feature_alpha_dropout_, torch.native_dropout,
        )
    },
    F.rrelu: _functional_rrelu,
    F.gumbel_softmax: _refuse_when(_signature_binder(F.gumbel_softmax), lambda bound: True, "draws Gumbel noise"),
    F.multi_head_attention_forward: _refuse_when(
        _signature_binder(F.multi_head_attention_forward),
        lambda bound: bool(bound["training"]) and bound["dropout_p"] > 0.0,
        "in training with dropout_p > 0 draws its attention dropout",
    ),
    **{
        function: _refuse_when(_POOL_ARGS, lambda bound: bound["_random_samples"] is None, "draws its pooling regions")
        # The public names (dispatching on return_indices) and the forms with indices reach the mode.
        for function in (
            F.fractional_max_pool2d, F.fractional_max_pool2d_with_indices,
            F.fractional_max_pool3d, F.fractional_max_pool3d_with_indices,
        )
    },
}


# ------------------------------------------------------------------- the mode
def _device_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.device:
    """Where a random op draws: its `device` argument, else its first tensor's, else torch's default device."""
    device = kwargs.get("device")
    if device is not None:
        return torch.device(device)
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    # Also sees a `with torch.device(...)` block around this mode.
    return torch.get_default_device()


class RunStream(TorchFunctionMode):
    """While active, torch's random ops draw from `generator_for(device)` instead of the global generators.

    `generator_for` gives the generator for a device ("cpu", "cuda:N"); draws
    on the meta device are left alone (they produce no values and consume no
    randomness). An op that already has a generator keeps it.
    """

    def __init__(self, generator_for: GeneratorFor) -> None:
        super().__init__()
        self._generator_for = generator_for

    def generator(self, device: torch.device) -> torch.Generator:
        return self._generator_for(device)

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        # Runs for every torch call while active: one dict lookup for the calls that draw nothing.
        handler = _DISPATCH.get(func)
        if handler is None:
            return func(*args, **kwargs) if kwargs else func(*args)
        return handler(self, func, args, kwargs or {})


def _router(position: int | None) -> Handler:
    """Hand a generator-taking op the stream's generator for its device, unless the caller gave one."""

    def route(stream: RunStream, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if position is not None and len(args) > position:
            if args[position] is None:
                device = _device_of(args, kwargs)
                if device.type != "meta":
                    args = (*args[:position], stream.generator(device), *args[position + 1 :])
        elif kwargs.get("generator") is None:
            device = _device_of(args, kwargs)
            if device.type != "meta":
                kwargs["generator"] = stream.generator(device)
        return func(*args, **kwargs)

    return route


_DISPATCH: dict[Any, Handler] = {
    **{func: _router(position) for func, position in _ROUTED.items()},
    **_HANDLERS,
}


def seeded_draws(seed: int) -> RunStream:
    """A stream of fresh generators seeded with `seed`, one per device: the draws of a process
    after `torch.manual_seed(seed)`, without reseeding the process."""
    generators: dict[torch.device, torch.Generator] = {}

    def generator_for(device: torch.device) -> torch.Generator:
        if device not in generators:
            generators[device] = torch.Generator(device=device).manual_seed(seed)
        return generators[device]

    return RunStream(generator_for)


def discarded_draws() -> RunStream:
    """A stream whose draws are thrown away: for building modules whose values are replaced next.

    Rebuilding a model from a checkpoint runs every constructor, which
    initialises weights the checkpoint's tensors then overwrite. Those draws
    must not come from (and advance) the caller's generators; fresh
    generators, dropped afterwards, take them.
    """
    return seeded_draws(0)


def draws_in_forward(model: nn.Module) -> bool:
    """Whether `model`'s forward draws random numbers in training mode (so a training pass needs a RunStream).

    Dropout of any kind with p > 0, multi-head attention with dropout, RReLU.
    A module that draws some other way is not seen here; the run's
    `global_generators_untouched` check then names the step that drew.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0.0:
            return True
        if isinstance(module, nn.MultiheadAttention) and module.dropout > 0.0:
            return True
        if isinstance(module, nn.RReLU):
            return True
    return False


def _global_states() -> list[torch.Tensor]:
    states = [torch.default_generator.get_state()]
    if torch.cuda.is_initialized():
        states += torch.cuda.get_rng_state_all()
    return states


@contextmanager
def global_generators_untouched(what: str) -> Iterator[None]:
    """Raise GlobalGeneratorTouched if the block advanced torch's global generators.

    The CPU generator, and the CUDA ones when CUDA was initialised before the
    block (CUDA initialised inside it starts its generators fresh: there is no
    earlier state to compare). Reads the states (a few kilobytes) before and
    after and changes nothing. A block that raises is not checked (its own
    error is the one to see).
    """
    before = _global_states()
    yield
    after = _global_states()
    if not all(torch.equal(a, b) for a, b in zip(before, after, strict=False)):
        raise GlobalGeneratorTouched(
            f"{what} drew from torch's global random generator: some op drew without a generator and "
            "outside the run's RunStream (a module that draws in its forward other than through dropout, "
            "or a random op the stream does not know). The run's results would depend on the process "
            "around it; make the op take the run's generator"
        )
