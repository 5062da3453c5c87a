"""AttachedModel: seed slots on an existing nn.Module, placed by forward hooks.

The user's module is used in place (same parameters, no copies): each slot is
applied by a forward hook on its submodule, to the output tensor (or to one
element of a tuple output, the rest passing through untouched). A dormant
slot returns its input object itself, so outputs are bitwise identical to
the module's own. Calling the user's module directly runs the slots too;
`detach()` removes the hooks and returns the module as it was.

Everything a MorphogeneticModel offers (lifecycle by slot id, parameter
accounting, counterfactual measurement, the controllers, checkpoints,
export) works on it; only the forward differs, because an arbitrary model
cannot be split into stem / segments / head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn

from esper.blueprints import BlueprintRegistry, default_registry
from esper.contracts.slot_ids import sort_slot_ids
from esper.model import MorphogeneticModel
from esper.model.attach_config import AttachConfig
from esper.model.probe import describe, resolve_module, run_model
from esper.random_stream import discarded_draws
from esper.seeds.gates import GateConfig
from esper.seeds.slot import SeedSlot

# Version of the record in which the slots' lifecycles ride in `state_dict()` (nn.Module "extra state").
EXTRA_STATE_VERSION = 1


class SlotHook:
    """A forward hook applying `slot` to a submodule's output (a class, so deepcopy keeps it bound)."""

    def __init__(self, slot: SeedSlot, output_index: int | None, module_name: str) -> None:
        self.slot = slot
        self.output_index = output_index
        self.module_name = module_name

    def __call__(self, _module: nn.Module, _args: object, output: Any) -> Any:
        index = self.output_index
        if index is None:
            if not isinstance(output, Tensor):
                raise TypeError(
                    f"slot {self.slot.slot_id}: submodule {self.module_name!r} returned {describe(output)}, "
                    f"but at attach time it returned a tensor"
                )
            return self.slot(output)
        if not isinstance(output, tuple | list) or len(output) <= index or not isinstance(output[index], Tensor):
            raise TypeError(
                f"slot {self.slot.slot_id}: submodule {self.module_name!r} returned {describe(output)}, "
                f"but at attach time element {index} of its output was the hidden-state tensor"
            )
        hidden = output[index]
        new = self.slot(hidden)
        if new is hidden:
            return None  # no change: the original output object goes on
        if isinstance(output, list):
            return [*output[:index], new, *output[index + 1 :]]
        return (*output[:index], new, *output[index + 1 :])


def primary_tensor(output: Any) -> Tensor:
    """The tensor a model's output stands for: itself, `.logits` (Hugging Face), or a tuple's first element."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"cannot find the output tensor in {describe(output)} (expected a tensor, .logits or a tuple)")


def _repeat_input(value: Any, k: int) -> Any:
    """The example input with every tensor repeated k times along the batch dim."""
    if isinstance(value, Tensor):
        return value.repeat(k, *([1] * (value.dim() - 1)))
    if isinstance(value, tuple):
        return tuple(_repeat_input(v, k) for v in value)
    if isinstance(value, Mapping):
        return {key: _repeat_input(v, k) for key, v in value.items()}
    return value


def _batch_size(value: Any) -> int:
    if isinstance(value, Tensor):
        if value.dim() == 0:
            raise ValueError("fused_forward: the input tensor needs a batch dim")
        return value.shape[0]
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, tuple) else ()
    for item in items:
        if isinstance(item, Tensor) and item.dim() > 0:
            return item.shape[0]
    raise ValueError(f"fused_forward: no batched tensor in the input ({describe(value)})")


class AttachedModel(MorphogeneticModel):
    """A user's module with seed slots after named submodules (see the module docstring)."""

    def __init__(
        self,
        module: nn.Module,
        config: AttachConfig,
        *,
        gates: GateConfig | None = None,
        registry: BlueprintRegistry | None = None,
    ) -> None:
        # MorphogeneticModel.__init__ expects a segmented host; everything after it only needs
        # `host`, `gate_config` and `seed_slots`, set here.
        nn.Module.__init__(self)
        if not isinstance(module, nn.Module):
            raise TypeError(f"attach: expected an nn.Module, got {type(module).__name__}")
        if not isinstance(config, AttachConfig):
            raise TypeError(f"attach config: expected an AttachConfig, got {type(config).__name__}")
        if isinstance(module, MorphogeneticModel) or _has_slot_hooks(module):
            raise ValueError("attach: this module already has esper slots (call detach() first)")
        targets = {sid: resolve_module(module, spec.module) for sid, spec in config.slots.items()}
        registry = registry if registry is not None else default_registry()
        # The user's module, not a segmented host: the inherited methods only use its parameters.
        self.host = module  # type: ignore[assignment]  # a user module, not a HostProtocol (see above)
        self.attach_config = config
        self.gate_config = gates if gates is not None else GateConfig()
        self.seed_slots = nn.ModuleDict(
            {
                sid: SeedSlot(sid, config.slots[sid].shape(), gates=self.gate_config, registry=registry)
                for sid in sort_slot_ids(config.slots)
            }
        )
        self._chain = []
        for sid, target in targets.items():
            spec = config.slots[sid]
            target.register_forward_hook(SlotHook(self.slot(sid), spec.output_index, spec.module))

    # ---------------------------------------------------------------- forward
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.host(*args, **kwargs)

    def fused_forward(self, x: Any, alpha_settings: Sequence[Mapping[str, float]]) -> Tensor:
        """Evaluate K alpha settings in one batched pass: returns (K, B, ...).

        The whole input is repeated K times (an arbitrary model cannot be cut
        at the first slot that varies). The result is the model's output
        tensor (its `.logits` for Hugging Face outputs). Eval mode only.
        """
        if self.training:
            raise RuntimeError("fused_forward is for evaluation: call model.eval() first")
        k = len(alpha_settings)
        if k == 0:
            raise ValueError("fused_forward needs at least one alpha setting")
        batch = _batch_size(x)
        named = sorted({sid for setting in alpha_settings for sid in setting})
        for sid in named:
            self.slot(sid)
        dtype = next(self.host.parameters()).dtype
        device = self._device()
        with ExitStack() as stack:
            for sid in named:
                slot = self.slot(sid)
                current = slot.alpha.alpha
                per_setting = torch.tensor(
                    [setting.get(sid, current) for setting in alpha_settings], dtype=dtype, device=device
                )
                stack.enter_context(slot.force_alpha(per_setting.repeat_interleave(batch)))
            module: nn.Module = self.host
            out = primary_tensor(run_model(module, _repeat_input(x, k)))
        return out.reshape(k, batch, *out.shape[1:])

    # ------------------------------------------------------------- lifecycle
    def module_for(self, slot_id: str) -> str:
        """The name of the submodule slot `slot_id` sits after."""
        self.slot(slot_id)
        return self.attach_config.slots[slot_id].module

    def detach(self) -> nn.Module:
        """Remove the slot hooks and return the user's module (seeds are dropped: export_attached keeps them)."""
        _remove_slot_hooks(self.host)
        return self.host

    # ------------------------------------------------- state_dict extra state
    # The slots' lifecycles travel inside `state_dict()`: loading one into a freshly attached
    # model first recreates every seed from its blueprint (this hook runs before the slots load
    # their own tensors), so `load_state_dict(strict=True)` and Lightning checkpoints just work.
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "version": EXTRA_STATE_VERSION,
            "attach": self.attach_config.model_dump(),
            "slots": {slot.slot_id: slot.lifecycle_state() for slot in self.slots()},
        }

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or set(state) != {"version", "attach", "slots"}:
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"attached model extra state: expected keys [attach, slots, version], got {found}")
        if state["version"] != EXTRA_STATE_VERSION:
            raise ValueError(
                f"attached model extra state: version {state['version']!r} is not {EXTRA_STATE_VERSION}"
            )
        stored = AttachConfig.model_validate(state["attach"])
        if stored != self.attach_config:
            raise ValueError(
                f"attached model extra state: the state was saved with slots {stored.model_dump()['slots']}, "
                f"this model has {self.attach_config.model_dump()['slots']}"
            )
        slots = state["slots"]
        if not isinstance(slots, dict) or set(slots) != set(self.seed_slots):
            raise ValueError(
                f"attached model extra state: expected lifecycles for slots {self.slot_ids()}, got {slots!r:.120}"
            )
        device = self._device()
        # Recreated seeds get fresh weights, which the state_dict's tensors replace next: those
        # draws go to a throwaway generator, not the caller's.
        with discarded_draws():
            # Every record is tried on a spare slot first, so a bad one changes no slot.
            for slot in self.slots():
                spare = SeedSlot(slot.slot_id, slot.shape, gates=slot.gate_config, registry=slot.registry)
                spare.restore_lifecycle(slots[slot.slot_id])
            for slot in self.slots():
                slot.restore_lifecycle(slots[slot.slot_id])
                slot.to(device)


def _has_slot_hooks(module: nn.Module) -> bool:
    return any(isinstance(hook, SlotHook) for sub in module.modules() for hook in sub._forward_hooks.values())


def _remove_slot_hooks(module: nn.Module) -> None:
    for sub in module.modules():
        remove_hooks(sub, SlotHook)


def remove_hooks(module: nn.Module, kind: type) -> None:
    """Remove `module`'s own forward hooks that are instances of `kind` (without their handles)."""
    for key in [k for k, hook in module._forward_hooks.items() if isinstance(hook, kind)]:
        del module._forward_hooks[key]
        module._forward_hooks_with_kwargs.pop(key, None)
        module._forward_hooks_always_called.pop(key, None)
