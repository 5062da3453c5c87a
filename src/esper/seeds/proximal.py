"""The proximal term of a TRAINING seed, and the record a training step collects it in.

In TRAINING a seed joins the host by a straight-through term: the seed learns from
the task gradient but never sees its own effect on the output, so on its own it
drifts without bound. The proximal term, the mean squared distance of the seed's
output from its input (the identity), is added to the loss so the seed takes a
bounded step in the direction the task gradient asks for.

The term depends on the activations of one forward pass, so it can only be computed
there. A training step asks for it explicitly: it opens a `ProximalRecord` around
its forward (`MorphogeneticModel.recording_proximal`), and the slots add their
terms to that record. Outside such a block a forward computes and keeps nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def proximal_term(seed_in: Tensor, seed_out: Tensor) -> Tensor:
    """Mean squared distance of the seed's output from its (detached) input."""
    return (seed_out - seed_in).pow(2).mean()


class ProximalRecord:
    """The proximal terms of the training forwards run while the record was open, per slot."""

    def __init__(self, slot_ids: Iterable[str]) -> None:
        self._terms: dict[str, list[Tensor]] = {slot_id: [] for slot_id in slot_ids}

    def add(self, slot_id: str, term: Tensor) -> None:
        if slot_id not in self._terms:
            raise KeyError(f"proximal record: slot {slot_id!r} is not one of {list(self._terms)}")
        self._terms[slot_id].append(term)

    def penalty(self) -> Tensor | None:
        """The sum of the terms, slot by slot in the model's slot order; None when no seed added one."""
        terms = [term for slot_terms in self._terms.values() for term in slot_terms]
        return torch.stack(terms).sum() if terms else None
