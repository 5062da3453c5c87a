"""Controllers (heuristic, static, random, learned policy), what they see and what they may do.

`legality` is the single source of truth of what is executable; `execute`
carries a controller's `Decision` out on the model.
"""

from esper.control.baselines import RandomController, StaticController
from esper.control.decision import WAIT, Controller, Decision, EpochSignals
from esper.control.execute import Outcome, check, execute
from esper.control.heuristic import HeuristicConfig, HeuristicController
from esper.control.legality import (
    GrowthLimits,
    legal_alpha_targets,
    legal_blueprints,
    legal_ops,
    legal_slots,
    live_seed_count,
    slot_allows,
)
from esper.control.registry import CONTROLLER_NAMES, build_controller

__all__ = [
    "CONTROLLER_NAMES",
    "WAIT",
    "Controller",
    "Decision",
    "EpochSignals",
    "GrowthLimits",
    "HeuristicConfig",
    "HeuristicController",
    "Outcome",
    "RandomController",
    "StaticController",
    "build_controller",
    "check",
    "execute",
    "legal_alpha_targets",
    "legal_blueprints",
    "legal_ops",
    "legal_slots",
    "live_seed_count",
    "slot_allows",
]
