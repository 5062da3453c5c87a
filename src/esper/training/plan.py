"""The run plan: a TrainConfig and its task's defaults, resolved once into concrete values.

    plan = resolve_plan(config)     # raises PlanError (one line naming the field) on bad input

Every value a run uses is in the plan: the optimizer and both learning rates,
epochs, batch size, the host's kind and config, the blueprints, the typed
heuristic config, gates, governor. `GrowthRun`, its optimizers and the
controller read the plan; nothing downstream reads the task's defaults again.
The plan is recorded in the `run_started` event, so `summary.json` and every
reader of events.jsonl see the values the run actually used.

`lookup_task` is the one place a task name is checked.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from esper.contracts.config import StrictConfig
from esper.contracts.validation import describe_validation_error
from esper.control.heuristic import HeuristicConfig
from esper.seeds.gates import GateConfig
from esper.tasks import Task, default_tasks
from esper.training.config import GovernorConfig, TrainConfig

__all__ = ["HostPlan", "OptimizerPlan", "PlanError", "RunPlan", "lookup_task", "resolve_plan"]


class PlanError(ValueError):
    """A config cannot be resolved into a plan; the message is one line naming the field."""


class OptimizerPlan(StrictConfig):
    """The host optimizer and one per seed (same kind; seeds without weight decay)."""

    kind: Literal["sgd", "adamw"]
    host_lr: float = Field(gt=0)
    seed_lr: float = Field(gt=0)
    # SGD's momentum; None for AdamW, which has none (its betas are torch's defaults).
    momentum: float | None = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    grad_clip: float = Field(gt=0)

    @model_validator(mode="after")
    def _momentum_with_sgd(self) -> OptimizerPlan:
        if (self.momentum is None) != (self.kind == "adamw"):
            raise ValueError(f"momentum: expected a value for sgd and None for adamw, got {self.momentum!r}")
        return self


class HostPlan(StrictConfig):
    """The host's kind and config (the task's, with the run's `host_overrides` on top).

    `output_key` names the config key sized by the data (`num_classes`,
    `vocab_size`); a task whose output size is only known from its data
    leaves it out until `RunPlan.sized_for` fills it in.
    """

    kind: str
    config: dict[str, Any]
    output_key: str


class RunPlan(StrictConfig):
    """Everything a run uses, as concrete values (None only where None is the setting itself)."""

    task: str
    controller: str
    seed: int = Field(ge=0)
    device: Literal["cpu", "cuda"]
    threads: int = Field(ge=1)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    # None: the whole training set every epoch.
    max_batches_per_epoch: int | None = Field(ge=1)
    optimizer: OptimizerPlan
    host: HostPlan
    blueprints: tuple[str, ...]
    max_seeds: int = Field(ge=0)
    seed_budget_ratio: float = Field(ge=0)
    training_proximal_weight: float = Field(ge=0)
    heuristic: HeuristicConfig
    gates: GateConfig
    governor: GovernorConfig
    # None: the task's own data source (generated data, or the Python stdlib for the text task).
    data_dir: str | None
    text_file: str | None
    telemetry: tuple[str, ...]

    def sized_for(self, num_classes: int) -> RunPlan:
        """This plan with the host's output size set from the data (checked if already set)."""
        key = self.host.output_key
        config = dict(self.host.config)
        if key in config:
            if config[key] != num_classes:
                raise PlanError(
                    f"host config {key!r} is {config[key]!r} but the task's data has {num_classes} classes"
                )
            return self
        config[key] = num_classes
        host = self.host.model_copy(update={"config": config})
        return self.model_copy(update={"host": host})

    def as_record(self) -> dict[str, Any]:
        """The plan as plain JSON values (what `run_started` and summary.json carry)."""
        return self.model_dump(mode="json")


def lookup_task(name: str) -> Task:
    """The registered task called `name`; PlanError listing the available tasks when there is none."""
    try:
        return default_tasks().get(name)
    except ValueError as error:
        raise PlanError(f"--task: {error}") from None


def _blueprints(config: TrainConfig, task: Task) -> tuple[str, ...]:
    from esper.blueprints import default_registry

    names = list(config.blueprints) if config.blueprints is not None else list(task.default_blueprints)
    if not names:
        raise PlanError("blueprints: expected a non-empty list of names, got []")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise PlanError(f"blueprints: names given more than once: {', '.join(repeated)}")
    available = default_registry().names(task.topology)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise PlanError(
            f"blueprints: unknown {task.topology} blueprint(s) {', '.join(map(repr, unknown))} for task "
            f"{task.name!r}; available: {', '.join(available)}"
        )
    return tuple(names)


def _heuristic(config: TrainConfig, task: Task) -> HeuristicConfig:
    # Checked whatever the controller: a typo in [heuristic] is a typo even when another controller runs.
    try:
        HeuristicConfig(**task.defaults.heuristic)
    except ValidationError as error:
        raise PlanError(
            f"task {task.name!r} default heuristic: {describe_validation_error(HeuristicConfig, error)}"
        ) from None
    try:
        # Per field: the run's [heuristic] table over the task's settings over the global defaults.
        return HeuristicConfig(**{**task.defaults.heuristic, **config.heuristic})
    except ValidationError as error:
        raise PlanError(f"heuristic: {describe_validation_error(HeuristicConfig, error)}") from None


def _gates(config: TrainConfig, task: Task) -> GateConfig:
    """Per field: the fields the run's [gates] table sets, over the task's, over the global default.

    The global default is the training default (permissive gates) when the run gives no
    [gates] table, and GateConfig's own defaults for the fields a table leaves out (as
    before task defaults existed, so a table means the same on a task without gate settings).
    """
    if not task.defaults.gates:
        return config.gates
    if "gates" not in config.model_fields_set:
        return GateConfig(**{"permissive": True, **task.defaults.gates})
    # Values, not a dump: a dump leaves out a field at its default (blend_full_host_gradient).
    given = {name: getattr(config.gates, name) for name in config.gates.model_fields_set}
    return GateConfig(**{**task.defaults.gates, **given})


def _host(config: TrainConfig, task: Task) -> HostPlan:
    from esper.hosts import HOST_KINDS

    merged = {**task.host_config, **config.host_overrides}
    host_class = HOST_KINDS.get(task.host_kind)
    if host_class is not None and task.output_key in merged:
        # The whole host config is known before the data loads: check it now, not when the host is built.
        config_class: Any = host_class.config_class  # type: ignore[attr-defined]
        try:
            config_class.model_validate(merged)
        except ValidationError as error:
            raise PlanError(f"host_overrides: {describe_validation_error(config_class, error)}") from None
    return HostPlan(kind=task.host_kind, config=merged, output_key=task.output_key)


def resolve_plan(config: TrainConfig) -> RunPlan:
    """Resolve `config` with its task's defaults into a RunPlan; PlanError names the first bad field."""
    if not isinstance(config, TrainConfig):
        raise PlanError(f"run config: expected a TrainConfig, got {type(config).__name__}")
    task = lookup_task(config.task)
    defaults = task.defaults
    blueprints = _blueprints(config, task)
    heuristic = _heuristic(config, task)
    gates = _gates(config, task)
    host = _host(config, task)

    def given(value: Any, default: Any) -> Any:
        return default if value is None else value

    return RunPlan(
        task=task.name,
        controller=config.controller,
        seed=config.seed,
        device=config.device,
        threads=config.threads,
        epochs=given(config.epochs, defaults.epochs),
        batch_size=given(config.batch_size, defaults.batch_size),
        max_batches_per_epoch=given(config.max_batches_per_epoch, defaults.max_batches_per_epoch),
        optimizer=OptimizerPlan(
            kind=defaults.optimizer,
            host_lr=given(config.host_lr, defaults.host_lr),
            seed_lr=given(config.seed_lr, defaults.seed_lr),
            momentum=defaults.momentum if defaults.optimizer == "sgd" else None,
            weight_decay=defaults.weight_decay,
            grad_clip=config.grad_clip,
        ),
        host=host,
        blueprints=blueprints,
        max_seeds=given(config.max_seeds, defaults.max_seeds),
        seed_budget_ratio=given(config.seed_budget_ratio, defaults.seed_budget_ratio),
        training_proximal_weight=config.training_proximal_weight,
        heuristic=heuristic,
        gates=gates,
        governor=config.governor,
        data_dir=config.data_dir,
        text_file=config.text_file,
        telemetry=tuple(config.telemetry),
    )
