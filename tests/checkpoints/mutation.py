"""Mutating one field of a checkpoint payload, and comparing what a load gives back with what was stored.

Shared by the mutation tests: a payload is a tree of dicts, lists, primitives
and tensors (what `torch.load(weights_only=True)` returns); a mutation
replaces, deletes or adds one node and names it by the path an error
message would use ("model > seed_slots.r0c1 > tick", "run > history > [2]").
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import torch

Path = tuple[str | int, ...]

UNKNOWN_KEY = "zz_unknown"
# Replacements for any node: another type, a negative, a huge number, a float for an int, a string, None.
ANY_VALUES: tuple[object, ...] = ("x", None, -1, 2**70, 1.5, True, [], {}, -1.0, 1e30)


def render(path: Path) -> str:
    """The path as CheckpointError writes it: " > " between parts, "[i]" for ints, "seed_slots.ID" for slots."""
    parts: list[str] = []
    index = 0
    while index < len(path):
        part = path[index]
        if part == "seed_slots" and index + 1 < len(path) and parts[-1:] != ["state_dict"]:
            parts.append(f"seed_slots.{path[index + 1]}")
            index += 2
            continue
        parts.append(f"[{part}]" if isinstance(part, int) else part)
        index += 1
    return " > ".join(parts)


def nodes(tree: Any, prefix: Path = (), *, skip: frozenset[str] = frozenset()) -> Iterator[Path]:
    """Every node below the root (long lists of ints contribute their ends only)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            path = (*prefix, key)
            yield path
            if key not in skip:
                yield from nodes(value, path, skip=skip)
    elif isinstance(tree, list):
        indices = range(len(tree)) if len(tree) <= 8 else (0, 1, len(tree) - 2, len(tree) - 1)
        for index in indices:
            path = (*prefix, index)
            yield path
            yield from nodes(tree[index], path, skip=skip)


def get(tree: Any, path: Path) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def put(tree: Any, path: Path, value: Any) -> None:
    get(tree, path[:-1])[path[-1]] = value


def remove(tree: Any, path: Path) -> None:
    del get(tree, path[:-1])[path[-1]]


def tensor_variants(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Another dtype, another shape, other values."""
    variants = [tensor.to(torch.float64 if tensor.dtype != torch.float64 else torch.float32)]
    variants.append(tensor.reshape(-1)[:-1].clone() if tensor.numel() > 1 else tensor.reshape(1, -1).clone())
    variants.append(tensor.unsqueeze(0).clone())
    if tensor.is_floating_point():
        variants.append(tensor * 0.5 + 0.25)
    elif tensor.dtype == torch.uint8:
        variants.append(tensor ^ 1)
    else:
        variants.append(tensor + 1)
    return variants


def mutate(payload: dict[str, Any], path: Path, choice: int) -> tuple[dict[str, Any], Path, str]:
    """(a mutated deep copy of `payload`, the mutated path, what was done): mutation number `choice` at `path`."""
    tree = copy.deepcopy(payload)
    parent, node = get(tree, path[:-1]), get(tree, path)
    choices: list[tuple[str, Any]] = [("replace", value) for value in ANY_VALUES]
    if isinstance(parent, dict):
        choices.append(("delete", None))
    if isinstance(node, dict):
        choices.append(("add", None))
    if type(node) is int:
        choices += [("replace", node + 1), ("replace", -node - 1), ("replace", float(node)), ("replace", node * 10**9)]
    if type(node) is float:
        choices += [("replace", -node - 1.0), ("replace", math.nan), ("replace", math.inf), ("replace", node * 3.0)]
        if math.isfinite(node):
            choices.append(("replace", int(node)))
    if isinstance(node, str):
        choices += [("replace", node + "_x"), ("replace", "")]
    if isinstance(node, list):
        choices += [("replace", node[:-1]), ("replace", [*node, node[-1] if node else 0])]
    if isinstance(node, torch.Tensor):
        choices += [("replace", variant) for variant in tensor_variants(node)]
    kind, value = choices[choice % len(choices)]
    if kind == "delete":
        remove(tree, path)
        return tree, path, "delete"
    if kind == "add":
        node[UNKNOWN_KEY] = 0
        return tree, (*path, UNKNOWN_KEY), "add unknown key"
    put(tree, path, value)
    shown = f"tensor {value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)[:40]
    return tree, path, f"replace with {shown}"


def same(stored: Any, loaded: Any, path: Path = ()) -> str | None:
    """None when `loaded` holds exactly what was stored, else where not.

    An int stored for a float loads as that float: the same value, the same behaviour.
    """
    if isinstance(stored, torch.Tensor) or isinstance(loaded, torch.Tensor):
        if not (isinstance(stored, torch.Tensor) and isinstance(loaded, torch.Tensor)):
            return render(path)
        loaded = loaded.detach().cpu()
        if stored.dtype != loaded.dtype or stored.shape != loaded.shape:
            return render(path)
        equal = torch.equal(stored, loaded) or (
            stored.is_floating_point() and torch.allclose(stored, loaded, rtol=0, atol=0, equal_nan=True)
        )
        return None if equal else render(path)
    if isinstance(stored, dict):
        if not isinstance(loaded, dict) or set(stored) != set(loaded):
            return render(path)
        for key in stored:
            found = same(stored[key], loaded[key], (*path, key))
            if found is not None:
                return found
        return None
    if isinstance(stored, list | tuple):
        if not isinstance(loaded, list | tuple) or len(stored) != len(loaded):
            return render(path)
        for index, (a, b) in enumerate(zip(stored, loaded, strict=True)):
            found = same(a, b, (*path, index))
            if found is not None:
                return found
        return None
    if type(stored) is float or type(loaded) is float:
        if type(stored) is bool or type(loaded) is bool:
            return render(path)
        numbers = isinstance(stored, int | float) and isinstance(loaded, int | float)
        if numbers and (stored == loaded or (math.isnan(stored) and math.isnan(loaded))):
            return None
        return render(path)
    return None if type(stored) is type(loaded) and stored == loaded else render(path)
