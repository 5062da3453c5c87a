"""Seed slots on any nn.Module (a Hugging Face model included): `attach`, the attached model, its export,
and `Grower`, the once-per-epoch growth step for your own training loop.

The attached model itself (where slots sit: forward hooks on named submodules,
what they see: the shape probe) is model-level code in `esper.model.attach`,
`esper.model.attached`, `esper.model.attach_config` and `esper.model.probe`, so
checkpoints can store it; this package re-exports it next to the parts that
build on training and checkpoints (`Grower`, `export_attached`).
"""

from esper.adapters.export import StaticAttachedModel, export_attached
from esper.adapters.grower import Grower, GrowthStep, default_blueprints
from esper.model.attach import attach, slot_mapping
from esper.model.attach_config import AttachConfig, AttachedSlot
from esper.model.attached import AttachedModel, primary_tensor

__all__ = [
    "AttachConfig",
    "AttachedModel",
    "AttachedSlot",
    "Grower",
    "GrowthStep",
    "StaticAttachedModel",
    "attach",
    "default_blueprints",
    "export_attached",
    "primary_tensor",
    "slot_mapping",
]
