"""Seed lifecycle stages and the legal transitions between them."""

from __future__ import annotations

from enum import IntEnum


class SeedStage(IntEnum):
    """Lifecycle stage of the seed in a slot. Values are a stable contract."""

    UNKNOWN = 0
    DORMANT = 1
    GERMINATED = 2
    TRAINING = 3
    BLENDING = 4
    # 5 is reserved (a retired stage); never reuse it.
    HOLDING = 6  # older documents call this PROBATIONARY
    FOSSILIZED = 7
    PRUNED = 8
    EMBARGOED = 9
    RESETTING = 10


# Every stage a slot can actually be in (UNKNOWN never is; 5 is reserved), in value order.
SLOT_STAGES: tuple[SeedStage, ...] = tuple(s for s in SeedStage if s != SeedStage.UNKNOWN)

VALID_TRANSITIONS: dict[SeedStage, frozenset[SeedStage]] = {
    SeedStage.UNKNOWN: frozenset(),
    SeedStage.DORMANT: frozenset({SeedStage.GERMINATED}),
    SeedStage.GERMINATED: frozenset({SeedStage.TRAINING, SeedStage.PRUNED}),
    SeedStage.TRAINING: frozenset({SeedStage.BLENDING, SeedStage.PRUNED}),
    SeedStage.BLENDING: frozenset({SeedStage.HOLDING, SeedStage.PRUNED}),
    SeedStage.HOLDING: frozenset({SeedStage.FOSSILIZED, SeedStage.BLENDING, SeedStage.PRUNED}),
    SeedStage.FOSSILIZED: frozenset(),
    SeedStage.PRUNED: frozenset({SeedStage.EMBARGOED}),
    SeedStage.EMBARGOED: frozenset({SeedStage.RESETTING}),
    SeedStage.RESETTING: frozenset({SeedStage.DORMANT}),
}

# Tuples, not sets: torch.compile guards `stage in tuple` inside a forward, but not
# membership in a frozenset, so a compiled model would miss a stage change.
_RUNS_IN_FORWARD = (SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED)
_ACTIVE = (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING)
_FAILURE = (SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING)
_TERMINAL = (SeedStage.FOSSILIZED,)


def is_valid_transition(source: SeedStage, target: SeedStage) -> bool:
    return target in VALID_TRANSITIONS[source]


def seed_runs_in_forward(stage: SeedStage) -> bool:
    """True where the seed's module takes part in the forward pass."""
    return stage in _RUNS_IN_FORWARD


def is_active(stage: SeedStage) -> bool:
    """A live, still-experimental seed (germinated but neither kept nor removed)."""
    return stage in _ACTIVE


def is_failure(stage: SeedStage) -> bool:
    """The slot is cooling down after a prune."""
    return stage in _FAILURE


def is_terminal(stage: SeedStage) -> bool:
    return stage in _TERMINAL
