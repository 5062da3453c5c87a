"""Build a controller from its command-line / config name."""

from __future__ import annotations

import importlib
from types import ModuleType

from esper.checkpoints.controller_state import POLICY_PREFIX
from esper.control.baselines import RandomController, StaticController, check_blueprints, check_limits
from esper.control.decision import Controller
from esper.control.heuristic import HeuristicConfig, HeuristicController
from esper.control.legality import GrowthLimits

CONTROLLER_NAMES: tuple[str, ...] = ("heuristic", "static", "random")
_POLICY_MODULE = "esper.growth_rl.policy_controller"


def build_controller(
    spec: str,
    *,
    blueprints: list[str],
    limits: GrowthLimits,
    seed: int,
    heuristic: HeuristicConfig | None = None,
) -> Controller:
    """"heuristic", "static", "random" or "policy:PATH" (a saved learned policy).

    `heuristic` configures the heuristic controller (defaults when None) and is
    not used by the others; `seed` drives the random and learned controllers.
    """
    if not isinstance(spec, str):
        raise ValueError(f"controller: expected a string, got {type(spec).__name__}")
    check_blueprints(blueprints)
    check_limits(limits)
    if heuristic is not None and not isinstance(heuristic, HeuristicConfig):
        raise ValueError(f"heuristic: expected a HeuristicConfig or None, got {type(heuristic).__name__}")
    if spec == "heuristic":
        config = heuristic if heuristic is not None else HeuristicConfig()
        return HeuristicController(config, blueprints, limits)
    if spec == "static":
        return StaticController()
    if spec == "random":
        return RandomController(blueprints, limits, seed)
    if spec.startswith(POLICY_PREFIX):
        path = spec[len(POLICY_PREFIX) :]
        if not path:
            raise ValueError(f"controller {spec!r}: expected a path after {POLICY_PREFIX!r}")
        return _load_policy(path, blueprints, limits, seed)
    valid = ", ".join([*CONTROLLER_NAMES, f"{POLICY_PREFIX}PATH"])
    raise ValueError(f"controller: unknown {spec!r}; valid: {valid}")


def check_policy_agent(path: str, *, blueprints: list[str]) -> None:
    """A ValueError naming the problem if the agent checkpoint at `path` cannot drive a run with `blueprints`."""
    _policy_module().check_policy_agent(path, blueprints=blueprints)


def _load_policy(path: str, blueprints: list[str], limits: GrowthLimits, seed: int) -> Controller:
    return _policy_module().load_policy_controller(path, blueprints=blueprints, limits=limits, seed=seed)


def _policy_module() -> ModuleType:
    # Looked up by name when a run names a learned policy: the policy lives in esper.growth_rl, a layer
    # above this one (it learns in runs that use these controllers), and the other controllers need none of it.
    try:
        return importlib.import_module(_POLICY_MODULE)
    except ModuleNotFoundError as error:
        if error.name != _POLICY_MODULE:
            raise  # the module exists but one of its own imports is missing: say that, not "unavailable"
        raise ValueError("the learned policy controller is not available in this build") from error
