"""Quality gate levels and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class GateLevel(IntEnum):
    G0 = 0  # germinate (sanity)
    G1 = 1  # GERMINATED -> TRAINING
    G2 = 2  # TRAINING -> BLENDING
    G3 = 3  # BLENDING -> HOLDING
    G5 = 5  # HOLDING -> FOSSILIZED


@dataclass(frozen=True)
class GateResult:
    """Outcome of one gate check; `checks_*` name the individual conditions."""

    gate: GateLevel
    passed: bool
    score: float
    checks_passed: tuple[str, ...] = field(default_factory=tuple)
    checks_failed: tuple[str, ...] = field(default_factory=tuple)
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "gate": int(self.gate),
            "passed": self.passed,
            "score": self.score,
            "checks_passed": list(self.checks_passed),
            "checks_failed": list(self.checks_failed),
            "message": self.message,
        }
