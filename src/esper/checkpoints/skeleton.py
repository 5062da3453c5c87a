"""Building a model without initialising it, then handing it the checkpoint's tensors.

The plain way to load (build every module, run its default initialiser, then
copy the stored weights over it) spends most of its time on random numbers
that are thrown away at once. Here the modules are built on the "meta"
device (shapes and dtypes only: no memory) with initialisers skipped
outright (`_SkeletonMode`), and the loaded tensors themselves become the
parameters and buffers: directly for plain modules, through
`load_state_dict(assign=True)` for any module with its own loading logic.
Three things that recipe gets wrong on its own are handled here:

- tied weights: assigning gives every state_dict name its own Parameter, so
  names that shared one Parameter in the built model (GPT's embedding and
  output head) are made to share one again, after checking that the stored
  tensors agree;
- tensors the state_dict does not carry (non-persistent buffers, plain
  tensor attributes) would be left on meta: a model with any is built for
  real instead (`build_skeleton` falls back), as is one whose constructor
  cannot run on meta;
- a tensor still on meta after loading is an error, never a silent half-model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.utils._device import DeviceContext, _device_constructors  # torch.device(...) as a context

from esper.checkpoints.errors import CheckpointError, join_path
from esper.random_stream import GENERATOR_OPS, discarded_draws

__all__ = [
    "alias_groups",
    "assign_weights",
    "build_skeleton",
    "check_ties",
    "meta_tensors",
    "uncovered_tensors",
]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def uncovered_tensors(model: nn.Module) -> list[str]:
    """Tensors of `model` that its state_dict does not carry (non-persistent buffers, tensor attributes)."""
    names = []
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        names += [dot + name for name in module._non_persistent_buffers_set if module._buffers[name] is not None]
        # Parameters and buffers live in their own dicts, so vars() shows only plain attributes.
        names += [dot + attr for attr, value in vars(module).items() if isinstance(value, torch.Tensor)]
    return names


# In-place tensor methods that only write values, and torch.nn.init's initialisers. On meta there
# are no values, so the skeleton skips them; anything that changes metadata (requires_grad_,
# resize_, set_...) still runs.
_VALUE_WRITERS = frozenset(
    {
        "zero_", "fill_", "copy_", "uniform_", "normal_", "bernoulli_", "random_", "exponential_",
        "log_normal_", "cauchy_", "geometric_", "add_", "sub_", "mul_", "div_", "clamp_", "fill_diagonal_",
    }
)  # fmt: skip
_SKIPPED_ON_META = frozenset(
    [getattr(torch.Tensor, name) for name in _VALUE_WRITERS]
    + [
        function
        for name, function in vars(torch.nn.init).items()
        if callable(function) and name.endswith("_") and not name.startswith("_")
    ]
)
_CONSTRUCTORS = _device_constructors()


class _SkeletonMode(DeviceContext):
    """`torch.device("meta")` that also skips weight initialisation.

    Initialisers cost Python time per layer and compute nothing on meta
    tensors, whose values the checkpoint supplies anyway. Subclassing
    torch's own device context keeps one mode on the stack (one Python call
    per torch call, as with torch.device), and the checks below are set
    lookups because they run for every torch call made while building.
    """

    def __init__(self) -> None:
        super().__init__("meta")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SKIPPED_ON_META:
            # torch.nn.init passes its tensor by keyword; tensor methods get it as the first argument.
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        elif func in _CONSTRUCTORS and kwargs.get("device") is None:
            kwargs["device"] = self.device
        if func in GENERATOR_OPS and kwargs.get("generator") is None and not _draws_on_meta(args, kwargs):
            # A constructor drawing into a real tensor would draw from the caller's global generator.
            raise _DrawsOffMeta(f"{func.__name__} draws on a real device while building on meta")
        return func(*args, **kwargs)


class _DrawsOffMeta(RuntimeError):
    """A constructor drew random numbers into a tensor that is not on meta: build the model for real."""


def _draws_on_meta(args: tuple, kwargs: dict) -> bool:
    device = kwargs.get("device")
    if device is not None:
        return torch.device(device).type == "meta"
    target = next((value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)), None)
    return target is None or target.is_meta


def build_skeleton(build: Callable[[], ModuleT]) -> tuple[ModuleT, bool]:
    """Run `build()` on the meta device; returns (model, True) when the result can take assigned weights.

    Initialisers are skipped while it runs (see _SkeletonMode), so nothing is
    drawn; a constructor that draws into a tensor on a real device sends the
    model to the normal build. The normal build draws from a throwaway
    generator: neither way moves the caller's generators.

    Falls back to a normal build, returning (model, False), when the
    constructor cannot run on meta (it raises RuntimeError, e.g. by reading
    a tensor's value) or when the model holds tensors its state_dict would
    not fill in. A ValueError (bad config) propagates from the first build.
    """
    try:
        with _SkeletonMode():
            model = build()
    except RuntimeError:
        return _real_build(build), False
    if uncovered_tensors(model):
        return _real_build(build), False
    return model, True


def _real_build(build: Callable[[], ModuleT]) -> ModuleT:
    # The initial weights drawn here are replaced by the checkpoint's: a throwaway generator takes
    # the draws, so the caller's generators do not move.
    with discarded_draws():
        return build()


def alias_groups(state: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """Names that share one tensor object in `model.state_dict(keep_vars=True)`, in state_dict order."""
    by_identity: dict[int, list[str]] = {}
    for name, tensor in state.items():
        by_identity.setdefault(id(tensor), []).append(name)
    return [names for names in by_identity.values() if len(names) > 1]


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (
        a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
        and a.storage_offset() == b.storage_offset()
        and a.shape == b.shape
        and a.stride() == b.stride()
    )


def check_ties(groups: list[list[str]], state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """Every name tied to another must hold the same values in the checkpoint (one Parameter in the model)."""
    problems = []
    for first, *others in groups:
        reference = state_dict[first]
        for name in others:
            tensor = state_dict[name]
            # torch.save writes a shared tensor once, so a well-formed checkpoint has both as one view.
            if not _same_view(reference, tensor) and not torch.equal(reference, tensor):
                problems.append(
                    (join_path(where, name), f"tied to {first} (one Parameter in the model) but holds different values")
                )
    if problems:
        raise CheckpointError.many(problems)


def meta_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers of `model` that are still on the meta device."""
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return [name for name, tensor in named if tensor.is_meta]


def _retie(model: nn.Module, groups: list[list[str]]) -> None:
    for first, *others in groups:
        owner, _, attr = first.rpartition(".")
        # A Parameter or a buffer: setattr registers it as the same kind on the other owners.
        shared = getattr(model.get_submodule(owner), attr)
        for name in others:
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, shared)


# Modules whose own loading step is exactly "take each stored tensor": nn.Module's, and the
# batch norms', which only adds num_batches_tracked to state_dicts older than its version 2
# (a key every checkpoint we read already carries; _load_weights checks every key first).
_PLAIN_LOADERS = frozenset({nn.Module._load_from_state_dict, _NormBase._load_from_state_dict})


def _loads_plainly(model: nn.Module) -> bool:
    """Whether load_state_dict(assign=True) would do nothing for `model` beyond taking each tensor."""
    for module in model.modules():
        cls = type(module)
        if (
            cls._load_from_state_dict not in _PLAIN_LOADERS
            or cls.set_extra_state is not nn.Module.set_extra_state
            or module._load_state_dict_pre_hooks
            or module._load_state_dict_post_hooks
            or module._non_persistent_buffers_set  # not in any state_dict: left for the meta check
        ):
            return False
    return True


def _take_tensors(module: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> None:
    """What load_state_dict(assign=True) does for plain modules, without its per-module scan of every key.

    As there, a Parameter keeps the skeleton's requires_grad, and setattr
    registers each tensor as the kind it replaces.
    """
    for name, param in module._parameters.items():
        if param is not None:
            setattr(module, name, nn.Parameter(state_dict[prefix + name], requires_grad=param.requires_grad))
    for name, buffer in module._buffers.items():
        if buffer is not None and name not in module._non_persistent_buffers_set:
            setattr(module, name, state_dict[prefix + name])
    for name, child in module._modules.items():
        if child is not None:
            _take_tensors(child, state_dict, f"{prefix}{name}.")


def assign_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], groups: list[list[str]]) -> None:
    """load_state_dict(strict=True, assign=True) into a skeleton, then restore its ties.

    The caller has checked that `state_dict` has exactly the model's keys,
    shapes and dtypes. Plain modules take their tensors directly (the same
    result, several times faster); any module with its own loading logic
    or hooks sends the whole model through load_state_dict.
    `groups` is `alias_groups(model.state_dict(keep_vars=True))` taken before loading (afterwards every
    name has its own Parameter). requires_grad flags come from the skeleton.
    """
    if _loads_plainly(model):
        # Every parameter and buffer is replaced (none is non-persistent): nothing is left on meta.
        _take_tensors(model, state_dict)
        _retie(model, groups)
        return
    model.load_state_dict(state_dict, strict=True, assign=True)
    _retie(model, groups)
    left = meta_tensors(model)
    if left:
        raise RuntimeError(f"loading left tensors on the meta device (not in the checkpoint): {', '.join(left)}")
