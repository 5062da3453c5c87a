"""The shape probe: one forward pass of the user's model that records what each named submodule outputs.

From that output it infers the slot's layout:
- (B, C, H, W): cnn with 2 spatial dims;
- (B, C, L): cnn with 1 spatial dim when the submodule contains an nn.Conv1d
  (or holds no conv, embedding or attention itself, while the whole model has
  convs and no embedding or attention), otherwise (B, T, D) transformer; pass
  `topology=` to `attach` to decide it yourself;
- a tuple/list output (Hugging Face blocks): the first floating tensor of a
  supported rank is the hidden state; the other elements pass through untouched.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from esper.model.attach_config import AttachedSlot

SUPPORTED_RANKS = (3, 4)
# Attribute names under which common attention modules keep their head count.
_HEAD_ATTRIBUTES = ("num_heads", "n_head", "n_heads", "num_attention_heads", "nhead")


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name`; an unknown name raises ValueError listing close matches."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"slot module: expected a submodule name like 'layer1', got {name!r}")
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        top = [n for n, _ in model.named_children()]
        raise ValueError(
            f"no submodule named {name!r} in {type(model).__name__}{hint} (top-level children: {', '.join(top)})"
        )
    return modules[name]


def describe(value: object) -> str:
    """A short description of a forward output, for error messages."""
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, tuple | list):
        inner = ", ".join(describe(v) for v in value[:6])
        more = ", ..." if len(value) > 6 else ""
        return f"{type(value).__name__} of {len(value)} ({inner}{more})"
    return type(value).__name__


def _supported(value: object) -> bool:
    return isinstance(value, Tensor) and value.is_floating_point() and value.dim() in SUPPORTED_RANKS


def locate_tensor(output: object, module_name: str) -> int | None:
    """None when `output` is the slot's tensor; the index of the first supported tensor in a tuple/list."""
    if _supported(output):
        return None
    if isinstance(output, tuple | list):
        for index, value in enumerate(output):
            if _supported(value):
                return index
    raise ValueError(
        f"submodule {module_name!r} outputs {describe(output)}; a slot needs a floating tensor of shape "
        f"(B, C, L), (B, C, H, W) or (B, T, D), alone or inside a tuple"
    )


def _heads(module: nn.Module, width: int) -> int:
    for sub in module.modules():
        for attribute in _HEAD_ATTRIBUTES:
            value = getattr(sub, attribute, None)
            if type(value) is int and value > 0 and width % value == 0:
                return value
    return 1


def _has_conv1d(module: nn.Module) -> bool:
    return any(isinstance(sub, nn.Conv1d) for sub in module.modules())


def _looks_sequential(module: nn.Module) -> bool:
    """Token embeddings or attention (a module with a head count) inside."""
    return any(
        isinstance(sub, nn.Embedding | nn.MultiheadAttention)
        or any(type(getattr(sub, attribute, None)) is int for attribute in _HEAD_ATTRIBUTES)
        for sub in module.modules()
    )


def _topology(model: nn.Module, module: nn.Module, rank: int) -> str:
    if rank == 4:
        return "cnn"
    if _has_conv1d(module):
        return "cnn"
    if _looks_sequential(module):
        return "transformer"
    # A parameter-free submodule (an activation after a conv): decide by the whole model.
    return "cnn" if _has_conv1d(model) and not _looks_sequential(model) else "transformer"


def run_model(model: nn.Module, example_input: Any) -> Any:
    """Call `model` the way `example_input` says: a tuple is positional args, a dict keyword args."""
    if isinstance(example_input, tuple):
        return model(*example_input)
    if isinstance(example_input, Mapping):
        return model(**example_input)
    return model(example_input)


def probe_slots(
    model: nn.Module,
    modules: Mapping[str, str],
    example_input: Any,
    *,
    topology: Mapping[str, str] | None = None,
    n_heads: Mapping[str, int] | None = None,
) -> dict[str, AttachedSlot]:
    """Run `model` once (eval mode, no grad) and describe the slot after each named submodule.

    `modules` maps slot id -> submodule name. `topology` and `n_heads` (by slot
    id) override what the probe would infer.
    """
    topology = dict(topology or {})
    n_heads = dict(n_heads or {})
    for what, given in (("topology", topology), ("n_heads", n_heads)):
        unknown = sorted(set(given) - set(modules))
        if unknown:
            raise ValueError(f"{what}: {unknown} are not slot ids of this attach; slot ids: {list(modules)}")
    targets = {slot_id: resolve_module(model, name) for slot_id, name in modules.items()}
    seen: dict[str, list[object]] = {slot_id: [] for slot_id in modules}
    handles = []
    for slot_id, module in targets.items():

        def record(_module: nn.Module, _args: object, output: object, slot_id: str = slot_id) -> None:
            seen[slot_id].append(output)

        handles.append(module.register_forward_hook(record))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            run_model(model, example_input)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    slots: dict[str, AttachedSlot] = {}
    for slot_id, name in modules.items():
        outputs = seen[slot_id]
        if len(outputs) != 1:
            raise ValueError(
                f"submodule {name!r} ran {len(outputs)} times in one forward pass of the example input; "
                f"a slot must sit after a submodule that runs exactly once"
            )
        output = outputs[0]
        index = locate_tensor(output, name)
        # Ignored below: index is set only for a tuple or list output.
        tensor = output if index is None else output[index]  # type: ignore[index]
        assert isinstance(tensor, Tensor)
        kind = topology.get(slot_id, _topology(model, targets[slot_id], tensor.dim()))
        if kind not in ("cnn", "transformer"):
            raise ValueError(f"topology[{slot_id!r}]: expected 'cnn' or 'transformer', got {kind!r}")
        if kind == "cnn":
            slots[slot_id] = AttachedSlot(
                module=name, output_index=index, topology="cnn", width=tensor.shape[1], spatial_dims=tensor.dim() - 2
            )
        else:
            if tensor.dim() != 3:
                raise ValueError(
                    f"submodule {name!r} outputs {describe(tensor)}; a transformer slot needs (B, T, D)"
                )
            width = tensor.shape[-1]
            heads = n_heads.get(slot_id, _heads(targets[slot_id], width))
            slots[slot_id] = AttachedSlot(
                module=name, output_index=index, topology="transformer", width=width, n_heads=heads
            )
    return slots
