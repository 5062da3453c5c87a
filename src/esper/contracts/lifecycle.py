"""The lifecycle rulebook's tables: where each op takes a seed, and which gate guards the move.

Plain data, no torch: the slot enforces these tables (through `esper.seeds.rules`), and the
executor, the masks and the controllers ask the same check, so no other module keeps a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from esper.contracts.gates import GateLevel
from esper.contracts.stages import VALID_TRANSITIONS, SeedStage, is_active

# The stage an ADVANCE takes a seed to, from each stage ADVANCE works in. A HOLDING seed
# does not ADVANCE: it leaves by FOSSILIZE (kept), PRUNE, or a new alpha target (back to
# BLENDING), so the one forward move that needs the G5 judgement has its own op.
ADVANCE_TARGET: Mapping[SeedStage, SeedStage] = MappingProxyType(
    {
        SeedStage.GERMINATED: SeedStage.TRAINING,
        SeedStage.TRAINING: SeedStage.BLENDING,
        SeedStage.BLENDING: SeedStage.HOLDING,
    }
)

# FOSSILIZE: the only stage it works in, and where it goes.
FOSSILIZE_FROM = SeedStage.HOLDING
FOSSILIZE_TARGET = SeedStage.FOSSILIZED

# SET_ALPHA_TARGET works in these stages (from HOLDING it moves the seed back to BLENDING).
RETARGET_STAGES: tuple[SeedStage, ...] = (SeedStage.BLENDING, SeedStage.HOLDING)

# The gate that guards each gated move, by the stage moved to. Moves not listed (germination,
# prune, retarget, the cooldown after a prune) are ungated.
GATE_FOR_TARGET: Mapping[SeedStage, GateLevel] = MappingProxyType(
    {
        SeedStage.TRAINING: GateLevel.G1,
        SeedStage.BLENDING: GateLevel.G2,
        SeedStage.HOLDING: GateLevel.G3,
        SeedStage.FOSSILIZED: GateLevel.G5,
    }
)


@dataclass(frozen=True)
class Verdict:
    """Whether an op may run on a slot now (structurally), and if not why.

    `gated_target`: for an allowed ADVANCE or FOSSILIZE, the stage it moves to; the gate
    `GATE_FOR_TARGET[gated_target]` (which reads metrics) still decides whether it passes.
    """

    allowed: bool
    reason: str
    gated_target: SeedStage | None = None


def _check_tables() -> None:
    """Every move the tables allow must be a valid transition (checked once, at import)."""
    moves = [*ADVANCE_TARGET.items(), (FOSSILIZE_FROM, FOSSILIZE_TARGET), (SeedStage.HOLDING, SeedStage.BLENDING)]
    for source, target in moves:
        if target not in VALID_TRANSITIONS[source]:
            raise AssertionError(f"lifecycle table: {source.name} -> {target.name} is not a valid transition")
    for source in SeedStage:
        if is_active(source) and SeedStage.PRUNED not in VALID_TRANSITIONS[source]:
            raise AssertionError(f"lifecycle table: PRUNE must be a valid transition from {source.name}")
    for target in (*ADVANCE_TARGET.values(), FOSSILIZE_TARGET):
        if target not in GATE_FOR_TARGET:
            raise AssertionError(f"lifecycle table: no gate guards the move to {target.name}")


_check_tables()
