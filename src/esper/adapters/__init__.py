"""Seed slots on any nn.Module (a Hugging Face model included): `attach`, the attached model, its export.

Kept apart from the slot math: this package only decides where slots sit
(forward hooks on named submodules) and what they see (the shape probe).
"""

from esper.adapters.attach import attach, slot_mapping
from esper.adapters.attached import AttachedModel, primary_tensor
from esper.adapters.config import AttachConfig, AttachedSlot
from esper.adapters.export import StaticAttachedModel, export_attached
from esper.adapters.grower import Grower, GrowthStep, default_blueprints

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
