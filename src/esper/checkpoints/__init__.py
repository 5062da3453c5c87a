"""Checkpoints: the only place that reads or writes them.

- `save_model` / `load_model`: self-describing model checkpoints (a loaded
  model rebuilds every seed from its blueprint id; reading is strict).
- `save_checkpoint` / `load_checkpoint`: the low-level layer every format
  goes through (primitives and tensors only, atomic writes, weights_only
  reads, schema migrations).
- `audit_file`: why a `.pt` file would fail `torch.load(weights_only=True)`,
  found without running its code.
- `export_static`: a grown model as a plain static nn.Module.
"""

from esper.checkpoints.audit import audit_file
from esper.checkpoints.errors import CheckpointError
from esper.checkpoints.export import export_static
from esper.checkpoints.io import load_checkpoint, save_checkpoint
from esper.checkpoints.model_io import load_model, save_model

__all__ = [
    "CheckpointError",
    "audit_file",
    "export_static",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "save_model",
]
