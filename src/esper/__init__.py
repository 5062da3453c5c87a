"""Esper: morphogenetic training — networks that grow while they train."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Heavy names are imported on first use so `import esper` stays cheap and
# `esper.contracts` never pulls in torch.
_LAZY = {
    "MorphogeneticModel": "esper.model",
    "attach": "esper.adapters",
    "AttachedModel": "esper.adapters",
    "save_model": "esper.checkpoints",
    "load_model": "esper.checkpoints",
    "CheckpointError": "esper.checkpoints",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'esper' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
