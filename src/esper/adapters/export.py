"""Export an attached model back to a plain module with its fossilized seeds baked in.

The result holds a copy of the user's module (no slots, no lifecycle) and, after
each submodule whose slot holds a fossilized seed, that seed in a fixed-alpha
blend (`esper.checkpoints.export.FixedBlend`, the same operator the slot used),
applied by a forward hook. In eval mode its outputs equal the attached
model's bit for bit. Seeds that are not fossilized are left out, with a warning.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from torch import nn

from esper.checkpoints.export import FixedBlend
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.stages import SeedStage
from esper.model.attach_config import AttachConfig
from esper.model.attached import AttachedModel, SlotHook, remove_hooks
from esper.model.probe import resolve_module
from esper.seeds.blending import BlendGate


class BlendHook:
    """A forward hook running a FixedBlend on a submodule's output tensor (or one element of a tuple)."""

    def __init__(self, blend: FixedBlend, output_index: int | None) -> None:
        self.blend = blend
        self.output_index = output_index

    def __call__(self, _module: nn.Module, _args: object, output: Any) -> Any:
        index = self.output_index
        if index is None:
            return self.blend(output)
        new = self.blend(output[index])
        if isinstance(output, list):
            return [*output[:index], new, *output[index + 1 :]]
        return (*output[:index], new, *output[index + 1 :])


class StaticAttachedModel(nn.Module):
    """The user's module with fossilized seeds baked in: `forward` is the module's own."""

    def __init__(self, module: nn.Module, config: AttachConfig, blends: dict[str, FixedBlend]) -> None:
        super().__init__()
        unknown = sorted(set(blends) - set(config.slots))
        if unknown:
            raise ValueError(f"StaticAttachedModel: {unknown} are not slots; slots: {sorted(config.slots)}")
        self.module = module
        self.blends = nn.ModuleDict(blends)
        for slot_id, blend in blends.items():
            spec = config.slots[slot_id]
            resolve_module(module, spec.module).register_forward_hook(BlendHook(blend, spec.output_index))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


def export_attached(model: AttachedModel) -> StaticAttachedModel:
    """A standalone copy of `model`'s module with the fossilized seeds baked in (shares no tensors with it)."""
    if not isinstance(model, AttachedModel):
        raise TypeError(f"model must be an AttachedModel, got {type(model).__name__}")
    kept: dict[str, tuple[str, AlphaAlgorithm, float, nn.Module, BlendGate | None]] = {}
    for slot in model.slots():
        if slot.seed is None:
            continue
        if slot.stage != SeedStage.FOSSILIZED:
            warnings.warn(
                f"export: slot {slot.slot_id} left out: its seed is {slot.stage.name}, not FOSSILIZED",
                stacklevel=3,
            )
            continue
        state = slot.state
        assert state is not None  # a slot with a seed module has a seed state
        kept[slot.slot_id] = (state.blueprint, state.alpha_algorithm, slot.alpha.alpha, slot.seed, slot.blend_gate)
    # The slots are not copied (the memo maps them to themselves): their hooks are removed from the copy.
    memo: dict[int, Any] = {id(slot): slot for slot in model.slots()}
    module, parts = copy.deepcopy((model.host, kept), memo)
    for sub in module.modules():
        remove_hooks(sub, SlotHook)
    blends = {sid: FixedBlend(*part) for sid, part in parts.items()}
    static = StaticAttachedModel(module, model.attach_config, blends)
    static.train(model.training)
    return static
