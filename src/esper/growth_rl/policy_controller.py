"""The learned controller: a PPO agent's policy deciding one lifecycle action per epoch.

It sees exactly what it saw in training (esper.growth_rl.observations, normalised
with the agent's frozen statistics), acts greedily (argmax) over the exact
masks, and keeps its LSTM state across epochs; `state_dict` holds that state
so a resumed run continues identically.

Pairwise interactions reach the observation only through ContributionMeasured
events: whoever runs the controller should pass every event of the run to
`observe` (esper evaluate does). Without them the interaction features read
"not measured", and a warning says so once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from esper.checkpoints.controller_state import CONTROLLER_WHERE, PolicyState
from esper.checkpoints.errors import CheckpointError
from esper.checkpoints.strict import validate
from esper.contracts.actions import FactoredAction
from esper.contracts.stages import SeedStage
from esper.control.baselines import check_blueprints, check_decide_args, check_limits
from esper.control.decision import Decision, EpochSignals
from esper.control.legality import GrowthLimits
from esper.growth_rl.actions_decode import decode_action
from esper.growth_rl.agent_io import AgentCheckpoint, AgentMismatchError, load_agent
from esper.growth_rl.masks import build_masks
from esper.growth_rl.observations import InteractionTracker, ObservationLayout, build_observation
from esper.model import MorphogeneticModel
from esper.telemetry import events as ev

_JUDGED = (SeedStage.BLENDING, SeedStage.HOLDING)


class PolicyController:
    name = "policy"

    def __init__(self, checkpoint: AgentCheckpoint, blueprints: list[str], limits: GrowthLimits) -> None:
        check_blueprints(blueprints)
        check_limits(limits)
        checkpoint.check_compatible(blueprints=list(blueprints))
        self.checkpoint = checkpoint
        self.blueprints = list(blueprints)
        self.limits = limits
        self.layout = ObservationLayout(tuple(checkpoint.meta.slot_ids), tuple(blueprints))
        checkpoint.check_compatible(observation_signature=self.layout.signature())
        self.policy = checkpoint.build_policy().eval()
        self.normalizer = checkpoint.build_obs_normalizer()
        self.state = self.policy.initial_state(1)
        self.decisions = 0
        self.tracker = InteractionTracker()
        self._warned = False

    def observe(self, event: ev.TelemetryEvent) -> None:
        """Feed the run's telemetry (the interactions come from ContributionMeasured events)."""
        self.tracker.observe(event)

    def _interactions(self, signals: EpochSignals, model: MorphogeneticModel) -> dict[str, dict[str, float]]:
        interactions = self.tracker.for_epoch(signals.epoch)
        # GrowthRun measures interactions when 2-4 seeds in BLENDING/HOLDING have alpha > 0.
        judged = [s for s in model.slots() if s.stage in _JUDGED and s.alpha.alpha > 0.0]
        if not interactions and len(judged) >= 2 and not self._warned:
            self._warned = True
            warnings.warn(
                "policy controller: no ContributionMeasured events were passed to observe(), so the "
                "observation's seed interactions read 'not measured' (unlike in training)",
                stacklevel=3,
            )
        return interactions

    @torch.no_grad()
    def decide(self, signals: EpochSignals, model: object) -> Decision:
        check_decide_args(signals, model)
        assert isinstance(model, MorphogeneticModel)
        if tuple(model.slot_ids()) != self.layout.slot_ids:
            raise AgentMismatchError(
                f"policy controller: the model's slots {model.slot_ids()} differ from the agent's "
                f"{list(self.layout.slot_ids)} (trained on task {self.checkpoint.meta.task!r})"
            )
        obs = build_observation(self.layout, signals, model, self.limits, self._interactions(signals, model))
        obs = obs.unsqueeze(0)
        if self.normalizer is not None:
            obs = self.normalizer.normalize(obs)
        masks = build_masks(model, self.blueprints, self.limits).apply(lambda t: t.unsqueeze(0))
        out = self.policy.act(obs, self.state, masks, deterministic=True)
        self.state = out.state
        self.decisions += 1
        action = FactoredAction.from_indices(out.actions[0].tolist())
        return decode_action(action, self.layout.slot_ids, self.blueprints)

    def state_dict(self) -> dict[str, object]:
        h, c = self.state
        return {"h": h.clone(), "c": c.clone(), "decisions": self.decisions}

    def load_state_dict(self, state: object) -> None:
        """Strict: the stored schema, then the LSTM state's shape (CheckpointError); nothing changes on error."""
        validated = validate(PolicyState, state, CONTROLLER_WHERE)
        shape = tuple(self.state[0].shape)
        problems = [
            (f"{CONTROLLER_WHERE} > {key}", f"expected a tensor of shape {shape}, got shape {tuple(value.shape)}")
            for key, value in (("h", validated.h), ("c", validated.c))
            if tuple(value.shape) != shape
        ]
        if problems:
            raise CheckpointError.many(problems)
        self.state = (validated.h.clone(), validated.c.clone())
        self.decisions = validated.decisions


def load_policy_controller(
    path: str | Path, *, blueprints: list[str], limits: GrowthLimits, seed: int
) -> PolicyController:
    """The controller for `--controller policy:PATH`. `seed` is unused: argmax actions are deterministic."""
    if type(seed) is not int or seed < 0:
        raise ValueError(f"policy controller seed: expected an int >= 0, got {seed!r}")
    return PolicyController(load_agent(path), blueprints, limits)


def check_policy_agent(path: str | Path, *, blueprints: list[str]) -> None:
    """A ValueError naming the problem if the agent checkpoint at `path` cannot drive a run with `blueprints`."""
    try:
        agent = load_agent(path)
        agent.check_compatible(blueprints=blueprints)
    except (CheckpointError, AgentMismatchError) as error:
        raise ValueError(str(error)) from None
