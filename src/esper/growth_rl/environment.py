"""GrowthEnv: one growing-model training run as an RL environment, stepped one action at a time.

    env = GrowthEnv(EnvConfig(train=TrainConfig(task="mnist1d-blind")))
    obs, masks = env.reset(seed)                        # trains epoch 1
    obs, reward, done, info, masks = env.step(action)   # apply action, train the next epoch

The environment drives its run through the one epoch loop every driver runs,
esper.training.epoch_loop.epoch_steps: `reset` starts the loop (the run's first
epoch trains and the loop waits at its decision), each `step(action)` sends the
decoded action as that decision (the loop applies it and trains the next epoch).
Only who decides differs from `esper train`: the policy, not a controller.

An episode is `episode_length` host epochs and exactly as many steps: the
last step applies its action to the fully trained model and ends the episode
(its reward sees the model re-validated after that action). If the governor
aborts the run, the remaining steps admit only WAIT and give 0 reward, so
every episode has the same length.

Each env's run owns its generators (torch, numpy, python; esper.training.generators):
several envs stepped in one process, in any interleaving, behave exactly like
envs alone, and the process's own generators are left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from esper.contracts.actions import ActionSpace, FactoredAction, Op
from esper.contracts.config import StrictConfig
from esper.contracts.stages import SeedStage
from esper.control.decision import Controller, Decision, EpochSignals
from esper.control.execute import Outcome
from esper.control.registry import build_controller
from esper.growth_rl.actions_decode import decode_action
from esper.growth_rl.actions_encode import encode_decision
from esper.growth_rl.masks import build_masks, check_admitted, wait_only_masks
from esper.growth_rl.observations import InteractionTracker, ObservationLayout, build_observation
from esper.growth_rl.rewards import RewardConfig, StateView, compute_reward, shapley_values, snapshot
from esper.rl.distributions import ActionMasks
from esper.tasks import DataSplits
from esper.telemetry import events as ev
from esper.training.batches import eval_mode, evaluate
from esper.training.config import SEED_MAX, TrainConfig
from esper.training.epoch_loop import EpochLoop, EpochStep, LoopEnd, advance, epoch_steps
from esper.training.growth_run import GrowthRun
from esper.training.growth_step import decide

Emit = Callable[[ev.TelemetryEvent], None]
CONTROLLER_NAME = "policy"
# Keys of TrainConfig the environment sets itself.
ENV_OWNED_KEYS = frozenset({"seed", "epochs", "controller"})


class EnvConfig(StrictConfig):
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(task="mnist1d-blind"))
    episode_length: int = Field(25, ge=1)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    # Exact Shapley values of the seeds at each episode's end (info["shapley"]).
    shapley: bool = True


def as_factored(action: FactoredAction | Sequence[int] | Tensor) -> FactoredAction:
    if isinstance(action, FactoredAction):
        return action
    if isinstance(action, Tensor):
        if action.dim() != 1:
            raise ValueError(f"action: expected a 1-D tensor of 8 head indices, got shape {tuple(action.shape)}")
        return FactoredAction.from_indices(action.tolist())
    return FactoredAction.from_indices(list(action))


class GrowthEnv:
    def __init__(
        self,
        config: EnvConfig,
        *,
        splits: DataSplits | None = None,
        emit: Emit | None = None,
        env_index: int | None = None,
    ) -> None:
        if not isinstance(config, EnvConfig):
            raise ValueError(f"GrowthEnv config: expected an EnvConfig, got {type(config).__name__}")
        self.config = config
        self.env_index = env_index
        self._splits = splits
        self._emit = emit
        self.tracker = InteractionTracker()
        self.run: GrowthRun | None = None
        self._loop: EpochLoop | None = None
        self.layout: ObservationLayout | None = None
        self.space: ActionSpace | None = None
        self.seed: int | None = None
        self.steps = 0
        self.done = False
        self.aborted = False
        self.episode_return = 0.0
        self._decision_epoch = 0
        self._signals: EpochSignals | None = None
        self._obs: Tensor | None = None
        self._masks: ActionMasks | None = None
        self._expert: Controller | None = None
        self._expert_spec: str | None = None

    # ------------------------------------------------------------------ events
    def _on_event(self, event: ev.TelemetryEvent) -> None:
        self.tracker.observe(event)
        if self._emit is not None:
            self._emit(event)

    # ------------------------------------------------------------------ helpers
    def _require_run(self) -> GrowthRun:
        if self.run is None:
            raise ValueError("GrowthEnv: call reset(seed) before step()")
        return self.run

    def _advance(self, decision: Decision | None) -> tuple[bool, Outcome | None]:
        """Send `decision` to the run's loop (None: start it); it trains the next epoch unless the run ends.

        Returns whether the governor rolled back (or aborted) during that epoch, and how
        `decision` was carried out.
        """
        assert self._loop is not None
        step = advance(self._loop, decision)
        if isinstance(step, EpochStep):
            self._signals = step.signals
            return step.rolled_back, step.applied
        assert isinstance(step, LoopEnd)
        self._loop = None
        self.aborted = step.aborted
        return step.aborted, step.applied

    def _observe(self) -> tuple[Tensor, ActionMasks]:
        run = self._require_run()
        assert self.layout is not None and self.space is not None and self._signals is not None
        if self.aborted:
            assert self._obs is not None
            self._masks = wait_only_masks(self.space)
            return self._obs, self._masks
        interactions = self.tracker.for_epoch(self._signals.epoch)
        self._obs = build_observation(self.layout, self._signals, run.model, run.limits, interactions)
        self._masks = build_masks(run.model, run.blueprints, run.limits)
        return self._obs, self._masks

    def _emit_reward(self, total: float, components: dict[str, float]) -> None:
        event = ev.RewardComputed(epoch=self._decision_epoch, env=self.env_index, total=total, components=components)
        self._on_event(event)

    # ------------------------------------------------------------------ API
    def reset(self, seed: int) -> tuple[Tensor, ActionMasks]:
        """Start a new run with `seed` and train its first epoch; returns (obs, masks)."""
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
            raise ValueError(f"GrowthEnv.reset seed: expected an int in [0, {SEED_MAX}], got {seed!r}")
        # The train config was validated with the EnvConfig; an episode changes only its seed and length.
        train_config = self.config.train.model_copy(update={"seed": seed, "epochs": self.config.episode_length})
        self.tracker.reset()
        # enable_grad: callers (e.g. PPO's rollout loop) may step environments under no_grad.
        with torch.enable_grad():
            self.run = GrowthRun(train_config, emit=self._on_event, env=self.env_index, splits=self._splits)
            self._splits = self.run.splits
            self.layout = ObservationLayout(tuple(self.run.model.slot_ids()), tuple(self.run.blueprints))
            self.space = ActionSpace(len(self.layout.slot_ids), len(self.layout.blueprints))
            self.seed, self.steps, self.done, self.aborted, self.episode_return = seed, 0, False, False, 0.0
            self._signals, self._obs = None, None
            self._expert, self._expert_spec = None, None
            self._loop = epoch_steps(self.run, CONTROLLER_NAME)
            self._advance(None)
            if self.aborted:
                raise RuntimeError(f"GrowthEnv: the governor aborted the run (seed {seed}) in its first epoch")
            return self._observe()

    def step(
        self, action: FactoredAction | Sequence[int] | Tensor
    ) -> tuple[Tensor, float, bool, dict[str, Any], ActionMasks]:
        """Apply `action`, train the next epoch; returns (obs, reward, done, info, masks)."""
        run = self._require_run()
        if self.done:
            raise ValueError("GrowthEnv.step: the episode is over; call reset(seed)")
        assert self._masks is not None and self.space is not None and self._signals is not None
        factored = as_factored(action)
        factored.validate(self.space)
        check_admitted(self._masks, factored)
        with torch.enable_grad():
            self.steps += 1
            self._decision_epoch = run.epoch  # events and info name the epoch the action followed
            if self.aborted:
                return self._finish_step(0.0, {}, factored, rollback=False)
            assert self.layout is not None
            decision = decode_action(factored, self.layout.slot_ids, self.layout.blueprints)
            before = snapshot(run.model, self._signals.val_accuracy)
            # The loop applies the action and, unless this was the episode's last, trains the next epoch.
            rollback, outcome = self._advance(decision)
            assert outcome is not None
            if not outcome.executed:
                # The masks come from legality, which the executor also checks: this is a bug.
                raise RuntimeError(f"GrowthEnv: an admitted action was refused: {decision} ({outcome.reason})")
            done = self.steps >= self.config.episode_length
            if done != (self._loop is None and not self.aborted):
                raise RuntimeError(f"GrowthEnv: episode step {self.steps} and the run's epoch {run.epoch} disagree")
            after = self._final_view() if done else snapshot(run.model, self._signals.val_accuracy)
            total, components = compute_reward(
                self.config.reward, before, decision, outcome.executed, after, done=done, rollback=rollback
            )
            return self._finish_step(total, components, factored, rollback=rollback, after=after)

    def expert_action(self, spec: str) -> FactoredAction:
        """What controller `spec` (e.g. "heuristic") would do now, as an admitted action.

        The expert is built at the episode's first call and then asked once per
        step, so a stateful controller sees the run exactly as when it drives
        a run itself (esper.growth_rl.imitation records these as demonstrations).
        """
        run = self._require_run()
        if self.done:
            raise ValueError("GrowthEnv.expert_action: the episode is over; call reset(seed)")
        assert self._masks is not None and self.layout is not None and self._signals is not None
        assert self.space is not None  # set with the layout
        if self.aborted:
            return FactoredAction.from_indices([0] * len(self.space.nvec()))
        if self._expert is None or self._expert_spec != spec:
            assert self.seed is not None
            self._expert = build_controller(
                spec,
                blueprints=list(run.blueprints),
                limits=run.limits,
                seed=self.seed,
                heuristic=run.plan.heuristic,
            )
            self._expert_spec = spec
        # The growth step's decision, taken as every driver takes it (esper.training.growth_step).
        decision = decide(self._expert, self._signals, run.model)
        return encode_decision(decision, self.layout.slot_ids, self.layout.blueprints, self._masks)

    def _final_view(self) -> StateView:
        """The model right after the last action, re-validated (the action may change accuracy)."""
        run = self._require_run()
        with eval_mode(run.model):
            val = evaluate(run.model, run.splits.val, run.batch_size * 4, run.device)
        return snapshot(run.model, val.accuracy)

    def _finish_step(
        self,
        total: float,
        components: dict[str, float],
        action: FactoredAction,
        *,
        rollback: bool,
        after: StateView | None = None,
    ) -> tuple[Tensor, float, bool, dict[str, Any], ActionMasks]:
        run = self._require_run()
        assert self._signals is not None
        self.done = self.steps >= self.config.episode_length
        self.episode_return += total
        info: dict[str, Any] = {
            "epoch": self._decision_epoch,
            "op": Op(action.op).name,
            "rollback": rollback,
            "aborted": self.aborted,
            "val_accuracy": after.val_accuracy if after is not None else self._signals.val_accuracy,
            "reward_components": dict(components),
        }
        shapley: dict[str, float] = {}
        if self.done:
            final = after if after is not None and not self.aborted else self._final_view()
            if self.config.shapley and not self.aborted:
                shapley = shapley_values(run.model, run.splits.val, run.batch_size * 4, run.device)
            info.update(
                final_val_accuracy=final.val_accuracy,
                episode_return=self.episode_return,
                host_params=final.host_params,
                seed_params=final.seed_params,
                fossilized=sum(1 for s in final.slots.values() if s.stage == SeedStage.FOSSILIZED),
                shapley=shapley,
                seed=self.seed,
            )
        # Shapley values ride on the last step's event under "shapley/<slot>"; they are
        # not reward terms (the terms are the keys without "/", and they sum to total).
        self._emit_reward(total, {**components, **{f"shapley/{k}": v for k, v in shapley.items()}})
        obs, masks = self._observe()
        return obs, total, self.done, info, masks
