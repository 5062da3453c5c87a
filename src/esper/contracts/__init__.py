"""Shared contracts: plain Python, no torch import.

Everything other packages agree on lives here: lifecycle stages and their
transitions, gate levels and results, alpha enums, slot ids, action heads,
schema versions and shared numeric constants.
"""

from esper.contracts.alpha import AlphaAlgorithm, AlphaCurve, AlphaMode
from esper.contracts.constants import (
    EMBARGO_EPOCHS,
    GRADIENT_EPSILON,
    SLOT_FREE_AFTER_PRUNE_TICKS,
)
from esper.contracts.gates import GateLevel, GateResult
from esper.contracts.shapes import SlotShape, Topology
from esper.contracts.slot_ids import SlotId, format_slot_id, parse_slot_id, sort_slot_ids
from esper.contracts.stages import (
    VALID_TRANSITIONS,
    SeedStage,
    is_active,
    is_failure,
    is_terminal,
    is_valid_transition,
    seed_runs_in_forward,
)

__all__ = [
    "EMBARGO_EPOCHS",
    "GRADIENT_EPSILON",
    "SLOT_FREE_AFTER_PRUNE_TICKS",
    "VALID_TRANSITIONS",
    "AlphaAlgorithm",
    "AlphaCurve",
    "AlphaMode",
    "GateLevel",
    "GateResult",
    "SeedStage",
    "SlotId",
    "SlotShape",
    "Topology",
    "format_slot_id",
    "is_active",
    "is_failure",
    "is_terminal",
    "is_valid_transition",
    "parse_slot_id",
    "seed_runs_in_forward",
    "sort_slot_ids",
]
