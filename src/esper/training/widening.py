"""Host widening: every width of a host config scaled by one factor.

Shared by `esper compare` (a static host widened to a grown model's size) and
`esper frontier` (static hosts at several width multipliers). CNN hosts scale
each entry of `widths`; transformer hosts scale `d_model`, kept a multiple of
`n_heads` so the heads still divide it.
"""

from __future__ import annotations

from typing import Any

from esper.hosts import build_host


def param_count(kind: str, config: dict[str, Any]) -> int:
    """Exact parameter count of the host `kind` built from `config` (shared tensors counted once)."""
    host = build_host(kind, config)
    return sum(p.numel() for p in {id(p): p for p in host.parameters()}.values())


def scaled(config: dict[str, Any], factor: float) -> dict[str, Any]:
    """`config` with every width multiplied by `factor` (rounded, at least 1 / one head width)."""
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor > 0:
        raise ValueError(f"width factor: expected a number > 0, got {factor!r}")
    result = dict(config)
    if "widths" in config:
        result["widths"] = [max(1, round(w * factor)) for w in config["widths"]]
    elif "d_model" in config:
        heads = config["n_heads"]
        result["d_model"] = max(heads, round(config["d_model"] * factor / heads) * heads)
    else:
        raise ValueError(f"cannot widen a host config without 'widths' or 'd_model': {sorted(config)}")
    return result


def scaled_overrides(config: dict[str, Any], factor: float) -> dict[str, Any]:
    """Only the keys of `scaled(config, factor)` that differ from `config` (host_overrides form)."""
    return {k: v for k, v in scaled(config, factor).items() if v != config[k]}


def widened_overrides(kind: str, config: dict[str, Any], target_params: float) -> dict[str, Any]:
    """Host overrides whose parameter count is closest to `target_params`."""
    low, high = 1.0, 1.0
    while param_count(kind, scaled(config, high)) < target_params:
        high *= 2.0
    for _ in range(30):
        middle = (low + high) / 2.0
        if param_count(kind, scaled(config, middle)) < target_params:
            low = middle
        else:
            high = middle
    best = min((scaled(config, f) for f in (low, high)), key=lambda c: abs(param_count(kind, c) - target_params))
    return {k: v for k, v in best.items() if v != config[k]}
