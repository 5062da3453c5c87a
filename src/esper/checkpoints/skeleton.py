"""Building a model without initialising it, then handing it the checkpoint's tensors.

The plain way to load (build every module, run its default initialiser, then
copy the stored weights over it) spends most of its time on random numbers
that are thrown away at once. Here the modules are built on the "meta"
device (shapes and dtypes only: no memory, no initialiser work) and
`load_state_dict(assign=True)` makes the loaded tensors themselves the
parameters and buffers. Three things that recipe gets wrong on its own are
handled here:

- tied weights: `assign` gives every state_dict name its own Parameter, so
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

from esper.checkpoints.errors import CheckpointError, join_path

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
    stored = model.state_dict(keep_vars=True)
    names = [name for name, _ in model.named_buffers(remove_duplicate=False) if name not in stored]
    for prefix, module in model.named_modules():
        # Parameters and buffers live in their own dicts, so vars() shows only plain attributes.
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor):
                names.append(f"{prefix}.{attr}" if prefix else attr)
    return names


def build_skeleton(build: Callable[[], ModuleT]) -> tuple[ModuleT, bool]:
    """Run `build()` on the meta device; returns (model, True) when the result can take assigned weights.

    Falls back to a normal build, returning (model, False), when the
    constructor cannot run on meta (it raises RuntimeError, e.g. by reading
    a tensor's value) or when the model holds tensors its state_dict would
    not fill in. A ValueError (bad config) propagates from the first build.
    """
    try:
        with torch.device("meta"):
            model = build()
    except RuntimeError:
        return build(), False
    if uncovered_tensors(model):
        return build(), False
    return model, True


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


def assign_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], groups: list[list[str]]) -> None:
    """load_state_dict(strict=True, assign=True) into a skeleton, then restore its ties.

    `groups` is `alias_groups(model.state_dict(keep_vars=True))` taken before loading (afterwards every
    name has its own Parameter). requires_grad flags come from the skeleton.
    """
    model.load_state_dict(state_dict, strict=True, assign=True)
    _retie(model, groups)
    left = meta_tensors(model)
    if left:
        raise RuntimeError(f"loading left tensors on the meta device (not in the checkpoint): {', '.join(left)}")
