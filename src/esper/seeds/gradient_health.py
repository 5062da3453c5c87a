"""Gradient-norm measurements used by G2 (is the seed actually learning?)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from esper.contracts.constants import GRADIENT_EPSILON


def gradient_norm(parameters: Iterable[torch.nn.Parameter]) -> float | None:
    """L2 norm of all gradients, or None when no parameter has a gradient yet."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    return float(torch.nn.utils.get_total_norm(grads, norm_type=2.0))


def gradient_ratio(seed_norm: float | None, host_norm: float | None) -> float | None:
    """Seed/host gradient-norm ratio; None ("never measured") if either is missing."""
    if seed_norm is None or host_norm is None:
        return None
    return seed_norm / (host_norm + GRADIENT_EPSILON)
