"""The run configuration: one validated object, one place that reads config files.

A config file (TOML or JSON) holds any subset of TrainConfig's fields, nested
tables for the component configs. Unknown keys and wrong types are errors
that name the key (`ConfigError`, exit status 2 on the command line).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from esper.contracts.config import StrictConfig
from esper.contracts.validation import describe_validation_error
from esper.seeds.gates import GateConfig
from esper.tasks.registry import DEFAULT_TASK

SEED_MAX = 2**32 - 1
TelemetryName = Literal["console", "jsonl", "tensorboard", "wandb"]


def _jsonl_only() -> list[TelemetryName]:
    return ["jsonl"]


class ConfigError(ValueError):
    """A config file or option is malformed; the message names the key."""


class GovernorConfig(StrictConfig):
    """When to roll back. Losses compare against the epoch's train loss."""

    enabled: bool = True
    snapshot_every: int = Field(default=5, ge=1)
    max_rollbacks: int = Field(default=3, ge=0)
    # Loss stuck near ln(num_classes) (chance level) after this many epochs.
    lobotomy_after_epochs: int = Field(default=10, ge=1)
    lobotomy_tolerance: float = Field(default=0.02, ge=0)
    divergence_window: int = Field(default=20, ge=3)
    divergence_min_loss: float = 12.0
    divergence_sigmas: float = 6.0
    divergence_mean_ratio: float = 3.0
    divergence_consecutive: int = Field(default=3, ge=1)


class TrainConfig(StrictConfig):
    """Everything a run depends on. Task defaults fill the fields left as None."""

    task: str = DEFAULT_TASK
    controller: str = "heuristic"
    # numpy's legacy seeding accepts 0 <= seed < 2**32; one range for every RNG we seed.
    seed: int = Field(default=0, ge=0, le=SEED_MAX)
    epochs: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    host_lr: float | None = Field(default=None, gt=0)
    seed_lr: float | None = Field(default=None, gt=0)
    max_seeds: int | None = Field(default=None, ge=0)
    seed_budget_ratio: float | None = Field(default=None, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    # Weight of the TRAINING seeds' proximal term (mean squared output change): keeps a
    # seed trained by the straight-through signal near the identity until it blends in.
    training_proximal_weight: float = Field(default=1.0, ge=0)
    # Cap on training batches per epoch (None: the whole training set).
    max_batches_per_epoch: int | None = Field(default=None, ge=1)
    device: Literal["cpu", "cuda"] = "cpu"
    # CPU threads for torch. Our default hosts are small: one thread avoids
    # oversubscription (measured: 2 threads on a busy 2-core box were ~50x slower).
    threads: int = Field(default=1, ge=1)
    data_dir: str | None = None
    text_file: str | None = None
    # Overrides of the task's host config, e.g. {"widths": [64, 128, 128]}.
    host_overrides: dict[str, Any] = Field(default_factory=dict)
    blueprints: list[str] | None = None
    # Permissive by default: G2 counts epochs only. Strict G2 also needs the seed's projected
    # gain (measured with extra counterfactual settings every epoch, so only when gates are
    # strict) and its gradient ratio. Fossilization always needs a measured contribution (G5).
    gates: GateConfig = Field(default_factory=lambda: GateConfig(permissive=True))
    governor: GovernorConfig = Field(default_factory=GovernorConfig)
    heuristic: dict[str, Any] = Field(default_factory=dict)
    telemetry: list[TelemetryName] = Field(default_factory=_jsonl_only)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML or JSON config file into a dict (not yet validated)."""
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {path}: is a directory, expected a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {path}: not UTF-8 text (byte {error.start}: {error.reason})"
        ) from None
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot read: {error.strerror}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(f"config file {path}: expected a .toml or .json file, got {path.suffix!r}")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:].upper()}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a table of settings, got {type(data).__name__}")
    return data


def build_config(
    file_values: dict[str, Any], overrides: dict[str, Any], source: str = "config"
) -> TrainConfig:
    """Merge file values with command-line overrides (which win) and validate."""
    merged = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(f"{source}: {describe_validation_error(TrainConfig, error)}") from error
