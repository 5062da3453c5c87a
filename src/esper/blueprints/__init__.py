"""Seed architectures ("blueprints") and the registry that names them.

`default_registry()` is the process's registry (built-ins plus the
`esper.blueprints` entry-point group); see `esper.blueprints.registry` for how
a third-party package adds its own blueprints.
"""

from esper.blueprints.registry import (
    ENTRY_POINT_GROUP,
    BlueprintError,
    BlueprintInfo,
    BlueprintRegistry,
    BlueprintSpec,
    DuplicateBlueprintError,
    Factory,
    UnknownBlueprintError,
    default_registry,
    register_builtin_blueprints,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "BlueprintError",
    "BlueprintInfo",
    "BlueprintRegistry",
    "BlueprintSpec",
    "DuplicateBlueprintError",
    "Factory",
    "UnknownBlueprintError",
    "default_registry",
    "register_builtin_blueprints",
]
