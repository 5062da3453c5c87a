"""GrowthRun: one growing-model training run, steppable one epoch at a time.

    run = GrowthRun(plan)            # a RunPlan (resolve_plan(config)) or a TrainConfig
    signals = run.train_epoch()        # train, validate, governor, growth step up to the signals
    outcome = run.apply(decision)      # the growth step's end: a controller's lifecycle action

Every driver runs it through one loop, esper.training.epoch_loop.epoch_steps:
`esper train` and `esper evaluate` with a controller deciding (`run_epochs`), the
RL environments (and the gymnasium adapter over them) with the policy's action.
How an epoch trains (one process or DDP) is its `epoch_pass()`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import torch

from esper import distributed
from esper.checkpoints.run_state import check_run_fits, check_run_state
from esper.contracts.actions import Op
from esper.contracts.gates import GateResult
from esper.contracts.stages import SeedStage, seed_runs_in_forward
from esper.control.decision import Controller, Decision, EpochSignals
from esper.control.execute import Outcome, execute
from esper.control.legality import GrowthLimits
from esper.control.registry import build_controller
from esper.hosts import build_host
from esper.model import MorphogeneticModel
from esper.random_stream import draws_in_forward, global_generators_untouched
from esper.seeds.slot import SeedSlot
from esper.tasks import DataSplits, Task, TaskOptions
from esper.telemetry import events as ev
from esper.training.batches import Evaluation, eval_mode
from esper.training.config import TrainConfig
from esper.training.counterfactual import Counterfactuals
from esper.training.epoch_pass import EpochPass, LocalPass, train_pass
from esper.training.generators import RunGenerators
from esper.training.governor import Governor
from esper.training.growth_step import end_epoch, measure_contributions
from esper.training.optimizers import OptimizerSet
from esper.training.plan import RunPlan, lookup_task, resolve_plan

Emit = Callable[[ev.TelemetryEvent], None]
P = ParamSpec("P")
R = TypeVar("R")


class GovernorAbort(RuntimeError):
    """Too many rollbacks: the run stops (a resumable checkpoint is written)."""


def _ignore(_event: ev.TelemetryEvent) -> None:
    return None


def _own_draws(method: Callable[Concatenate[GrowthRun, P], R]) -> Callable[Concatenate[GrowthRun, P], R]:
    """Run `method` checking that it leaves torch's global generators where they were.

    Every draw of a run comes from its own generators (`self.generators`): given
    explicitly, or routed by the run's stream where torch code takes none. A
    step that moved the global generator drew something the run does not own
    (and would depend on the process around it): GlobalGeneratorTouched names the step.
    """

    @functools.wraps(method)
    def wrapper(self: GrowthRun, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with global_generators_untouched(f"GrowthRun.{method.__name__}"):
            return method(self, *args, **kwargs)

    return wrapper


class GrowthRun:
    def __init__(
        self,
        plan: RunPlan | TrainConfig,
        *,
        emit: Emit | None = None,
        env: int | None = None,
        splits: DataSplits | None = None,
        model: MorphogeneticModel | None = None,
    ) -> None:
        """`plan` is the run's resolved plan (a TrainConfig is resolved here, once).

        `model` is given when resuming (rebuilt from a checkpoint); otherwise
        the plan's host is built fresh."""
        if not isinstance(plan, RunPlan):
            plan = resolve_plan(plan)
        self.env = env
        self._emit = emit or _ignore
        self.task: Task = lookup_task(plan.task)
        self.epochs = plan.epochs
        self.batch_size = plan.batch_size
        self.max_batches = plan.max_batches_per_epoch
        self.device = torch.device(plan.device)
        torch.set_num_threads(plan.threads)
        # Every draw of the run (initial weights, seeds' weights, dropout) comes from these
        # (through `self.generators.stream()` where torch takes no generator argument).
        self.generators = RunGenerators(plan.seed)
        self.splits = splits if splits is not None else self.task.load_data(self._task_options(plan))
        # The host's output size comes from the data: the plan is complete once the data is known.
        self.plan = plan.sized_for(self.splits.num_classes)
        if model is None:
            with global_generators_untouched("building the run's host"), self.generators.stream():
                host = build_host(self.plan.host.kind, dict(self.plan.host.config))  # the initial weights
                model = MorphogeneticModel(host, gates=plan.gates)
        self.model = model.to(self.device)
        self.blueprints = list(plan.blueprints)
        host_params = self.model.param_counts().host
        self.limits = GrowthLimits(
            max_seeds=plan.max_seeds,
            max_added_params=int(plan.seed_budget_ratio * host_params),
        )
        optimizer = plan.optimizer
        self.optimizers = OptimizerSet(
            self.model,
            kind=optimizer.kind,
            host_lr=optimizer.host_lr,
            seed_lr=optimizer.seed_lr,
            momentum=optimizer.momentum,
            weight_decay=optimizer.weight_decay,
            grad_clip=optimizer.grad_clip,
        )
        self.governor = Governor(plan.governor, num_classes=self.splits.num_classes)
        # The governor always has something to restore: a loss that is non-finite in the very
        # first epoch rolls back to the initial weights (a resumed run loads its own snapshot).
        self.governor.take_snapshot(self.model, 0)
        self.epoch = 0
        self.history: dict[str, list[float]] = {
            k: [] for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
        }
        self._fossilized_this_epoch = False
        self._ddp: Any = None  # the DDP wrapper under torchrun (esper.distributed.ddp.TrainingModule)
        for slot in self.model.slots():
            slot.stage_listeners.append(self._on_stage_change)
            slot.gate_listeners.append(self._on_gate)

    @staticmethod
    def _task_options(plan: RunPlan) -> TaskOptions:
        return TaskOptions(
            data_dir=Path(plan.data_dir) if plan.data_dir else None,
            text_file=Path(plan.text_file) if plan.text_file else None,
            seed=plan.seed,
        )

    # --------------------------------------------------------------- telemetry
    def emit(self, event_type: type[ev.TelemetryEvent], **fields: Any) -> None:
        self._emit(event_type(epoch=self.epoch, env=self.env, **fields))

    def _on_stage_change(self, slot: SeedSlot, source: SeedStage, target: SeedStage, reason: str) -> None:
        blueprint = slot.state.blueprint if slot.state is not None else None
        if target == SeedStage.FOSSILIZED:
            self._fossilized_this_epoch = True
        self.emit(
            ev.SeedStageChanged,
            slot=slot.slot_id,
            blueprint=blueprint,
            from_stage=source.name,
            to_stage=target.name,
            reason=reason,
            alpha=slot.alpha.alpha,
            seed_params=slot.seed_param_count(),
        )

    def _on_gate(self, slot: SeedSlot, target: SeedStage, result: GateResult) -> None:
        self.emit(
            ev.GateEvaluated,
            slot=slot.slot_id,
            gate=result.gate.name,
            target_stage=target.name,
            passed=result.passed,
            score=result.score,
            checks_passed=list(result.checks_passed),
            checks_failed=list(result.checks_failed),
            message=result.message,
        )

    def started_event(self, controller: str, versions: dict[str, str], config: TrainConfig) -> None:
        """`config` is what the user asked for; the plan, what the run uses."""
        self.emit(
            ev.RunStarted,
            task=self.plan.task,
            controller=controller,
            seed=self.plan.seed,
            config=config.model_dump(mode="json"),
            plan=self.plan.as_record(),
            versions=versions,
            slots=self.model.slot_ids(),
            host_params=self.model.param_counts().host,
        )

    # ------------------------------------------------------------------ epoch
    def epoch_pass(self) -> EpochPass:
        """How this run trains and evaluates an epoch: DDP under torchrun, else this process alone."""
        if distributed.active():
            from esper.distributed.ddp import TrainingModule
            from esper.training.distributed import DistributedPass

            if self._ddp is None:
                self._ddp = TrainingModule(
                    self.model,
                    lambda: any(s.seed is not None and not seed_runs_in_forward(s.stage) for s in self.model.slots()),
                )
            return DistributedPass(self._ddp)
        return LocalPass()

    def _evaluate(self, dataset: Any) -> Evaluation:
        return self.epoch_pass().evaluate(self, dataset)

    def _train_pass(self) -> tuple[float, float]:
        if draws_in_forward(self.model):
            # Dropout draws in every training forward: the stream routes it (and costs a Python
            # call per torch op, so a model without such modules trains without it).
            with self.generators.stream():
                return train_pass(self, self.epoch_pass())
        return train_pass(self, self.epoch_pass())


    @_own_draws
    def train_epoch(self) -> EpochSignals:
        """Train one epoch, validate, let the governor act, then the growth step up to the signals.

        The growth step (esper.training.growth_step): measure the seeds' contributions, record
        them and the validation accuracy, tick the slots. The decision is `apply`'s.
        """
        self._fossilized_this_epoch = False
        train_loss, train_accuracy = self._train_pass()
        self.epoch += 1
        verdict = self.governor.check(train_loss, self.epoch)
        if verdict.rollback:
            self._rollback(verdict.reason)
            train_loss, train_accuracy = math.nan, math.nan
        with eval_mode(self.model):
            val = self._evaluate(self.splits.val)
        measured = measure_contributions(self.model, self.splits.val, self.batch_size * 4, self.device)

        def before_tick() -> None:
            self._report_contributions(measured)
            if not verdict.rollback:
                self.governor.maybe_snapshot(self.model, self.epoch, fossilized_now=False)

        end_epoch(self.model, val_accuracy=val.accuracy, measured=measured, before_tick=before_tick)
        self.optimizers.sync_with_model()
        for key, value in (
            ("train_loss", train_loss),
            ("train_accuracy", train_accuracy),
            ("val_loss", val.loss),
            ("val_accuracy", val.accuracy),
        ):
            self.history[key].append(value)
        self._emit_epoch_metrics()
        return self.signals()

    def _report_contributions(self, measured: Counterfactuals) -> None:
        for slot_id, contribution in measured.contributions.items():
            slot = self.model.slot(slot_id)
            assert slot.state is not None
            self.emit(
                ev.ContributionMeasured,
                slot=slot_id,
                contribution=contribution,
                velocity=slot.state.metrics.contribution_velocity,
                interactions=measured.interactions[slot_id],
            )

    def _rollback(self, reason: str) -> None:
        pruned = self.governor.rollback(self.model, reason)
        self.optimizers.reset_state()
        action = "abort" if self.governor.exhausted else "rollback"
        self.emit(
            ev.GovernorAction,
            action=action,
            reason=reason,
            rollbacks=self.governor.rollbacks,
            pruned_slots=pruned,
        )
        if self.governor.exhausted:
            raise GovernorAbort(
                f"stopped after {self.governor.rollbacks} rollbacks (limit {self.plan.governor.max_rollbacks}); "
                f"last reason: {reason}"
            )

    def _emit_epoch_metrics(self) -> None:
        counts = self.model.param_counts()
        slots = {
            r.slot: ev.SlotSnapshot(
                stage=r.stage,
                blueprint=r.blueprint,
                alpha=r.alpha,
                contribution=r.contribution,
                epochs_in_stage=r.epochs_in_stage,
            )
            for r in self.model.reports().values()
        }
        self.emit(
            ev.EpochMetrics,
            train_loss=self.history["train_loss"][-1],
            train_accuracy=self.history["train_accuracy"][-1],
            val_loss=self.history["val_loss"][-1],
            val_accuracy=self.history["val_accuracy"][-1],
            host_params=counts.host,
            seed_params=counts.seeds,
            total_params=counts.total,
            slots=slots,
        )

    def signals(self) -> EpochSignals:
        counts = self.model.param_counts()
        return EpochSignals.from_history(
            epoch=self.epoch,
            max_epochs=self.epochs,
            history=self.history,
            host_params=counts.host,
            seed_params=counts.seeds,
        )

    # ---------------------------------------------------------------- actions
    @_own_draws
    def make_controller(self) -> Controller:
        """The controller the plan names, configured by the plan.

        Built in the run's stream: a learned policy's network is constructed (its initial
        weights drawn, then replaced by the saved ones) before its weights load, and those draws
        have always been part of the run's stream.
        """
        with self.generators.stream():
            return build_controller(
                self.plan.controller,
                blueprints=self.blueprints,
                limits=self.limits,
                seed=self.plan.seed,
                heuristic=self.plan.heuristic,
            )

    @_own_draws
    def apply(self, decision: Decision, controller: str) -> Outcome:
        with self.generators.stream():  # a germinated seed's initial weights (and its shape probe)
            outcome = execute(self.model, decision, self.blueprints, self.limits)
        self.optimizers.sync_with_model()
        if self._fossilized_this_epoch:
            self.governor.take_snapshot(self.model, self.epoch)
        if decision.op != Op.WAIT or decision.reason:
            self.emit(
                ev.ControllerDecision,
                controller=controller,
                op=decision.op.name,
                slot=decision.slot,
                blueprint=decision.blueprint,
                params=decision.params(),
                executed=outcome.executed,
                reason=outcome.reason,
            )
        return outcome

    @property
    def finished(self) -> bool:
        return self.epoch >= self.epochs

    @_own_draws
    def test(self) -> tuple[float, float]:
        with eval_mode(self.model):
            result = self._evaluate(self.splits.test)
        return result.loss, result.accuracy

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything but the model (the checkpoint layer stores the model)."""
        return {
            "epoch": self.epoch,
            "history": {k: list(v) for k, v in self.history.items()},
            "optimizers": self.optimizers.state_dict(),
            "governor": self.governor.state_dict(),
            "rng": self.generators.state_dict(),
        }

    def load_state_dict(self, state: object) -> None:
        """Restore `state_dict()` output into this run (built with the checkpoint's config and model).

        Everything is validated first (types, ranges, and agreement with this
        run's config, model and optimizers): a bad state raises one
        CheckpointError naming each bad path and leaves the run untouched.
        """
        # Idempotent on a freshly built run: the model's seeds already have their optimizers.
        self.optimizers.sync_with_model()
        governor = self.plan.governor
        validated = check_run_state(
            state,
            epochs=self.epochs,
            max_rollbacks=governor.max_rollbacks,
            divergence_consecutive=governor.divergence_consecutive,
        )
        check_run_fits(
            validated,
            model=self.model,
            host_optimizer=self.optimizers.host,
            seed_optimizers=self.optimizers.seeds,
            max_rollbacks=governor.max_rollbacks,
        )
        self.epoch = validated.epoch
        history = validated.history
        self.history = {
            "train_loss": list(history.train_loss),
            "train_accuracy": list(history.train_accuracy),
            "val_loss": list(history.val_loss),
            "val_accuracy": list(history.val_accuracy),
        }
        self.optimizers.load_state_dict(validated.optimizers)
        self.governor.load_state_dict(validated.governor)
        self.generators.load_state(validated.rng)
