"""Tiny run configs that germinate early, shared by the distributed tests."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

# Strict gates with thresholds low enough that a seed goes GERMINATED -> TRAINING -> BLENDING
# within a few epochs; the heuristic germinates at epoch 1.
GROWING: dict[str, Any] = {
    "task": "mnist1d",
    "controller": "heuristic",
    "epochs": 6,
    "max_batches_per_epoch": 3,
    "batch_size": 32,
    "seed": 1,
    "gates": {
        "permissive": False,
        "g2_min_epochs": 1,
        "g3_min_epochs": 1,
        "g2_min_improvement_points": -100.0,
        "g2_min_gradient_ratio": 0.0,
    },
    "heuristic": {
        "min_epoch_to_germinate": 1,
        "min_epochs_left_to_germinate": 0,
        "stable_epochs": 1,
        "stable_rise_tolerance": 10.0,
        "stable_rel_improvement": 10.0,
        "plateau_epochs": 1,
        "plateau_min_gain_points": 100.0,
    },
}


def write_config(path: Path, **overrides: Any) -> Path:
    path.write_text(json.dumps({**GROWING, **overrides}), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
