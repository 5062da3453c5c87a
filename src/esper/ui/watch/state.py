"""The run as the dashboard sees it, rebuilt from events: pure Python, no textual.

`RunState.apply(event)` folds one typed event into the state; widgets only read
it. Keeping this apart from the widgets lets tests check it without a terminal
and lets its per-line cost be measured on its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from esper.telemetry import events as ev
from esper.ui.watch.follower import LineProblem

RunKind = Literal["train", "ppo"]
LOG_CAPACITY = 5000  # newest events kept for the log panel; the curves keep every epoch
PROBLEM_CAPACITY = 200  # newest skipped-line messages kept (all are counted)
ACTION_SHARE_PREFIX = "action_share/"
ENDED_STAGES = frozenset({"PRUNED", "FOSSILIZED"})  # the decisions; EMBARGOED/RESETTING only follow a prune


@dataclass(frozen=True)
class EpochPoint:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    host_params: int
    seed_params: int
    total_params: int


@dataclass(frozen=True)
class StageChange:
    epoch: int
    blueprint: str | None
    from_stage: str
    to_stage: str
    reason: str


@dataclass(frozen=True)
class GateRecord:
    epoch: int
    gate: str
    target_stage: str
    passed: bool
    checks_passed: tuple[str, ...]
    checks_failed: tuple[str, ...]
    message: str


@dataclass
class SlotView:
    """One slot's current state and its history (every seed it has held)."""

    slot: str
    stage: str = "DORMANT"
    blueprint: str | None = None
    alpha: float = 0.0
    contribution: float | None = None
    epochs_in_stage: int = 0
    lane: list[str] = field(default_factory=list)  # stage at the end of each epoch, in order
    changes: list[StageChange] = field(default_factory=list)
    gates: list[GateRecord] = field(default_factory=list)
    contributions: list[tuple[int, float]] = field(default_factory=list)  # (epoch, accuracy points)

    @property
    def end_reason(self) -> str | None:
        """Why the latest seed here was pruned or fossilized, with the failed checks of that epoch's gates.

        None while the slot's latest seed is still alive (or it never held one).
        """
        for change in reversed(self.changes):
            if change.to_stage == "GERMINATED":
                return None
            if change.to_stage not in ENDED_STAGES:
                continue
            text = f"{change.to_stage} at epoch {change.epoch}: {change.reason}"
            failed = [g for g in self.gates if g.epoch == change.epoch and not g.passed and g.checks_failed]
            if failed:
                text += " (failed: " + "; ".join(failed[-1].checks_failed) + ")"
            return text
        return None


@dataclass
class EnvView:
    """One environment of a PPO run."""

    env: int
    epoch: int = 0
    episode_return: float = 0.0  # sum of this episode's rewards so far
    last_return: float | None = None  # the previous (complete) episode's return
    val_accuracy: float | None = None  # only when the run records the envs' epoch metrics
    seeds: int | None = None  # seeds alive (not dormant) at the env's last epoch metrics
    last_action: str | None = None
    _last_reward_epoch: int = -1


@dataclass(frozen=True)
class LogEntry:
    line: int
    epoch: int
    type: str
    slot: str | None
    env: int | None
    text: str


@dataclass
class RunState:
    task: str | None = None
    controller: str | None = None
    seed: int | None = None
    slot_ids: list[str] = field(default_factory=list)
    kind: RunKind | None = None
    epoch: int = -1
    first_time: datetime | None = None
    last_time: datetime | None = None
    epochs: list[EpochPoint] = field(default_factory=list)
    best_val_accuracy: float | None = None
    slots: dict[str, SlotView] = field(default_factory=dict)
    rollbacks: int = 0
    finished_reason: str | None = None
    test_accuracy: float | None = None
    backend_failures: list[str] = field(default_factory=list)
    # PPO
    rounds: list[dict[str, float]] = field(default_factory=list)  # each PpoUpdate's metrics, in order
    imitation: list[dict[str, float]] = field(default_factory=list)
    envs: dict[int, EnvView] = field(default_factory=dict)
    round_components: dict[str, float] = field(default_factory=dict)  # sums since the last update
    round_steps: int = 0
    last_round_components: dict[str, float] = field(default_factory=dict)  # mean per step of the last round
    # Bookkeeping
    events_seen: int = 0
    event_counts: dict[str, int] = field(default_factory=dict)
    log: deque[LogEntry] = field(default_factory=lambda: deque(maxlen=LOG_CAPACITY))
    problems: deque[LineProblem] = field(default_factory=lambda: deque(maxlen=PROBLEM_CAPACITY))
    problem_count: int = 0
    restarts: int = 0
    version: int = 0  # bumped by every change, so widgets redraw only when something happened

    # ---- queries -------------------------------------------------------------------------
    @property
    def current(self) -> EpochPoint | None:
        return self.epochs[-1] if self.epochs else None

    @property
    def elapsed_seconds(self) -> float | None:
        """Time between the first and the latest event (the run's age as of its last event)."""
        if self.first_time is None or self.last_time is None:
            return None
        return (self.last_time - self.first_time).total_seconds()

    @property
    def round(self) -> int | None:
        return len(self.rounds) if self.kind == "ppo" else None

    def slot_order(self) -> list[str]:
        return [*self.slot_ids, *(s for s in self.slots if s not in self.slot_ids)]

    def event_types(self) -> list[str]:
        return sorted(self.event_counts)

    def log_slots(self) -> list[str]:
        return sorted({entry.slot for entry in self.log if entry.slot is not None})

    def filtered_log(self, type_filter: str | None, slot_filter: str | None, limit: int) -> list[LogEntry]:
        """The newest `limit` log entries matching the filters, oldest first."""
        picked: list[LogEntry] = []
        for entry in reversed(self.log):
            if type_filter is not None and entry.type != type_filter:
                continue
            if slot_filter is not None and entry.slot != slot_filter:
                continue
            picked.append(entry)
            if len(picked) >= limit:
                break
        picked.reverse()
        return picked

    def action_mix(self) -> dict[str, float]:
        """Share of each op in the latest PPO round (from the update's action_share metrics)."""
        if not self.rounds:
            return {}
        return {
            name.removeprefix(ACTION_SHARE_PREFIX): value
            for name, value in self.rounds[-1].items()
            if name.startswith(ACTION_SHARE_PREFIX)
        }

    def reward_components(self) -> tuple[str, dict[str, float]]:
        """Mean reward component per step: the last complete round's, or the current one's before any."""
        if self.last_round_components:
            return "last round", self.last_round_components
        if self.round_steps:
            return "this round", {k: v / self.round_steps for k, v in self.round_components.items()}
        return "none yet", {}

    # ---- updates -------------------------------------------------------------------------
    def add_problems(self, problems: list[LineProblem]) -> None:
        for problem in problems:
            self.problems.append(problem)
            self.problem_count += 1
        if problems:
            self.version += 1

    def apply(self, event: ev.TelemetryEvent, line: int = 0) -> None:
        """Fold one event into the state."""
        self.events_seen += 1
        self.event_counts[event.type] = self.event_counts.get(event.type, 0) + 1
        self.version += 1
        stamp = datetime.fromisoformat(event.time)
        if self.first_time is None or stamp < self.first_time:
            self.first_time = stamp
        if self.last_time is None or stamp > self.last_time:
            self.last_time = stamp
        if event.env is None and event.epoch > self.epoch:
            self.epoch = event.epoch
        slot = event.slot if isinstance(event, _SLOT_EVENTS) else None
        self.log.append(LogEntry(line, event.epoch, event.type, slot, event.env, describe(event)))
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _slot(self, slot_id: str) -> SlotView:
        view = self.slots.get(slot_id)
        if view is None:
            view = self.slots[slot_id] = SlotView(slot_id)
        return view

    def _env(self, index: int) -> EnvView:
        view = self.envs.get(index)
        if view is None:
            view = self.envs[index] = EnvView(index)
        return view

    def _mark_ppo(self) -> None:
        if self.kind is None:
            self.kind = "ppo"

    def _on_run_started(self, event: ev.RunStarted) -> None:
        self.kind = "train"
        self.task, self.controller, self.seed = event.task, event.controller, event.seed
        self.slot_ids = list(event.slots)
        for slot_id in event.slots:
            self._slot(slot_id)

    def _on_epoch(self, event: ev.EpochMetrics) -> None:
        if event.env is not None:
            env = self._env(event.env)
            env.val_accuracy = event.val_accuracy
            env.seeds = sum(1 for snap in event.slots.values() if snap.stage not in ("DORMANT", "UNKNOWN"))
            return
        if self.kind is None:
            self.kind = "train"
        self.epochs.append(
            EpochPoint(
                event.epoch,
                event.train_loss,
                event.train_accuracy,
                event.val_loss,
                event.val_accuracy,
                event.host_params,
                event.seed_params,
                event.total_params,
            )
        )
        if self.best_val_accuracy is None or event.val_accuracy > self.best_val_accuracy:
            self.best_val_accuracy = event.val_accuracy
        for slot_id, snap in event.slots.items():
            view = self._slot(slot_id)
            view.stage, view.blueprint, view.alpha = snap.stage, snap.blueprint, snap.alpha
            view.epochs_in_stage = snap.epochs_in_stage
            if snap.contribution is not None:
                view.contribution = snap.contribution
            view.lane.append(snap.stage)

    def _on_stage(self, event: ev.SeedStageChanged) -> None:
        if event.env is not None:
            return
        view = self._slot(event.slot)
        view.changes.append(StageChange(event.epoch, event.blueprint, event.from_stage, event.to_stage, event.reason))
        view.stage, view.alpha = event.to_stage, event.alpha
        if event.blueprint is not None:
            view.blueprint = event.blueprint

    def _on_gate(self, event: ev.GateEvaluated) -> None:
        if event.env is not None:
            return
        self._slot(event.slot).gates.append(
            GateRecord(
                event.epoch,
                event.gate,
                event.target_stage,
                event.passed,
                tuple(event.checks_passed),
                tuple(event.checks_failed),
                event.message,
            )
        )

    def _on_contribution(self, event: ev.ContributionMeasured) -> None:
        if event.env is not None:
            return
        view = self._slot(event.slot)
        view.contribution = event.contribution
        view.contributions.append((event.epoch, event.contribution))

    def _on_governor(self, event: ev.GovernorAction) -> None:
        if event.env is None:  # every governor action carries the run's rollback count so far
            self.rollbacks = max(self.rollbacks, event.rollbacks)
        elif event.action == "rollback":  # a PPO run: count the rollbacks of all its environments
            self.rollbacks += 1

    def _on_decision(self, event: ev.ControllerDecision) -> None:
        if event.env is None:
            return
        self._mark_ppo()
        env = self._env(event.env)
        target = f" {event.slot}" if event.slot else ""
        env.last_action = f"{event.op}{target}" + ("" if event.executed else " (refused)")

    def _on_reward(self, event: ev.RewardComputed) -> None:
        self._mark_ppo()
        env = self._env(event.env if event.env is not None else 0)
        if event.epoch <= env._last_reward_epoch:  # epochs restart: a new episode began
            env.last_return = env.episode_return
            env.episode_return = 0.0
        env._last_reward_epoch = event.epoch
        env.epoch = event.epoch
        env.episode_return += event.total
        self.round_steps += 1
        for name, value in event.components.items():
            self.round_components[name] = self.round_components.get(name, 0.0) + value

    def _on_ppo_update(self, event: ev.PpoUpdate) -> None:
        self._mark_ppo()
        self.rounds.append(dict(event.metrics))
        if self.round_steps:
            self.last_round_components = {k: v / self.round_steps for k, v in self.round_components.items()}
        self.round_components = {}
        self.round_steps = 0
        for env in self.envs.values():
            env.last_return, env.episode_return, env._last_reward_epoch = env.episode_return, 0.0, -1
            env.epoch = 0

    def _on_imitation(self, event: ev.ImitationUpdate) -> None:
        self._mark_ppo()
        self.imitation.append(dict(event.metrics))

    def _on_finished(self, event: ev.RunFinished) -> None:
        self.finished_reason = event.reason
        test = event.summary.get("test_accuracy")  # absent when the run stopped early
        if isinstance(test, float):
            self.test_accuracy = test

    def _on_backend_failed(self, event: ev.BackendFailed) -> None:
        self.backend_failures.append(f"{event.backend}: {event.error}")


_SLOT_EVENTS = (ev.SeedStageChanged, ev.GateEvaluated, ev.ContributionMeasured, ev.ControllerDecision)
_HANDLERS: dict[type[ev.TelemetryEvent], Callable[[RunState, Any], None]] = {
    ev.RunStarted: RunState._on_run_started,
    ev.EpochMetrics: RunState._on_epoch,
    ev.SeedStageChanged: RunState._on_stage,
    ev.GateEvaluated: RunState._on_gate,
    ev.ContributionMeasured: RunState._on_contribution,
    ev.GovernorAction: RunState._on_governor,
    ev.ControllerDecision: RunState._on_decision,
    ev.RewardComputed: RunState._on_reward,
    ev.PpoUpdate: RunState._on_ppo_update,
    ev.ImitationUpdate: RunState._on_imitation,
    ev.RunFinished: RunState._on_finished,
    ev.BackendFailed: RunState._on_backend_failed,
}


def describe(event: ev.TelemetryEvent) -> str:
    """One short line for the event log."""
    if isinstance(event, ev.RunStarted):
        return f"run started: {event.task} · {event.controller} · seed {event.seed} · {len(event.slots)} slots"
    if isinstance(event, ev.EpochMetrics):
        return (
            f"train loss {event.train_loss:.3f} acc {100 * event.train_accuracy:.1f}% · val loss "
            f"{event.val_loss:.3f} acc {100 * event.val_accuracy:.1f}% · params {event.total_params:,}"
        )
    if isinstance(event, ev.SeedStageChanged):
        return f"{event.blueprint or '-'} {event.from_stage} → {event.to_stage}: {event.reason}"
    if isinstance(event, ev.GateEvaluated):
        verdict = "passed" if event.passed else "FAILED"
        failed = f" · failed: {', '.join(event.checks_failed)}" if event.checks_failed else ""
        return f"{event.gate} → {event.target_stage} {verdict}{failed}"
    if isinstance(event, ev.ContributionMeasured):
        return f"contribution {event.contribution:+.2f} pt · velocity {event.velocity:+.2f}"
    if isinstance(event, ev.GovernorAction):
        return f"governor {event.action}: {event.reason} (rollbacks {event.rollbacks})"
    if isinstance(event, ev.ControllerDecision):
        head = " ".join(part for part in (event.controller, event.op, event.slot, event.blueprint) if part)
        done = "" if event.executed else " (not executed)"
        return f"{head}{done}: {event.reason}"
    if isinstance(event, ev.RewardComputed):
        parts = " ".join(f"{k} {v:+.3f}" for k, v in event.components.items())
        return f"reward {event.total:+.3f} · {parts}"
    if isinstance(event, ev.PpoUpdate):
        m = event.metrics
        shown = " · ".join(f"{k} {m[k]:+.3g}" for k in ("mean_return", "entropy", "approx_kl") if k in m)
        return f"PPO round {event.round + 1} · {shown}"
    if isinstance(event, ev.ImitationUpdate):
        shown = " · ".join(f"{k} {v:.3g}" for k, v in event.metrics.items() if k in ("bc_loss", "expert_prob"))
        return f"imitation pass {event.pass_index + 1} · {shown}"
    if isinstance(event, ev.RunFinished):
        return f"run finished: {event.reason}"
    if isinstance(event, ev.BackendFailed):
        return f"backend {event.backend} failed: {event.error}"
    return event.type
