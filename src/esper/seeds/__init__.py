"""One slot's seed mechanics: state, alpha ramp, blending, gates, the slot."""

from esper.seeds.gates import GateConfig, evaluate_gate
from esper.seeds.slot import LifecycleError, SeedSlot
from esper.seeds.state import SeedMetrics, SeedState

__all__ = ["GateConfig", "LifecycleError", "SeedMetrics", "SeedSlot", "SeedState", "evaluate_gate"]
