"""What a task is: a host, its data, its slot layout (via the host) and training defaults.

A task never downloads anything: its data is generated (MNIST-1D), read from
local files the user points at (CIFAR-10, a text file) or found on the machine
(the Python standard library's own source, for the text task).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError, model_validator
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from esper.contracts.config import StrictConfig
from esper.contracts.shapes import TOPOLOGIES, Topology
from esper.contracts.validation import describe_validation_error
from esper.seeds.gates import GateConfig
from esper.tasks.cache import default_cache_dir

DataKind = Literal["classification", "language_model"]
DATA_KINDS: tuple[str, ...] = ("classification", "language_model")


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """Where a task may look for data, and the run's seed.

    data_dir: a dataset directory the user supplied (CIFAR-10); text_file: a
    corpus for the text task; cache_dir: where generated data is cached.
    """

    data_dir: Path | None = None
    text_file: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("data_dir", "text_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                raise ValueError(f"TaskOptions.{name}: expected a pathlib.Path or None, got {value!r}")
        if not isinstance(self.cache_dir, Path):
            raise ValueError(f"TaskOptions.cache_dir: expected a pathlib.Path, got {self.cache_dir!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"TaskOptions.seed: expected an int, got {self.seed!r}")


@dataclass(frozen=True)
class DataSplits:
    """Train / validation / test sets of one task.

    classification: x is float32 (N, ...), y is int64 (N,) in [0, num_classes).
    language_model: x is int64 (N, T) tokens, y is int64 (N, T) next-token
    targets, num_classes is the vocabulary size and `vocab[i]` is token i.
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    kind: DataKind
    description: str
    vocab: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ValueError(f"DataSplits.kind: expected one of {DATA_KINDS}, got {self.kind!r}")
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 2
        ):
            raise ValueError(f"DataSplits.num_classes: expected an int >= 2, got {self.num_classes!r}")
        if self.kind == "language_model":
            if self.vocab is None or len(self.vocab) != self.num_classes:
                found = None if self.vocab is None else len(self.vocab)
                raise ValueError(
                    f"DataSplits.vocab: a language_model needs a vocab of num_classes={self.num_classes} "
                    f"tokens, got {found}"
                )
        elif self.vocab is not None:
            raise ValueError(
                "DataSplits.vocab: only a language_model has a vocabulary, got one for classification"
            )
        for split in ("train", "val", "test"):
            self._check_split(split, getattr(self, split))

    def _check_split(self, split: str, dataset: TensorDataset) -> None:
        where = f"DataSplits.{split}"
        if not isinstance(dataset, TensorDataset) or len(dataset.tensors) != 2:
            raise ValueError(f"{where}: expected a TensorDataset of (x, y), got {dataset!r}")
        x, y = dataset.tensors
        if len(dataset) == 0:
            raise ValueError(f"{where}: the split is empty")
        if self.kind == "classification":
            if not x.is_floating_point():
                raise ValueError(f"{where}: classification inputs must be floating point, got {x.dtype}")
            _check_labels(where, y, expected_ndim=1, num_classes=self.num_classes)
        else:
            if x.dtype != y.dtype or x.shape != y.shape or x.ndim != 2:
                raise ValueError(
                    f"{where}: language_model x and y must both be int64 (N, T), "
                    f"got x {x.dtype} {tuple(x.shape)} and y {y.dtype} {tuple(y.shape)}"
                )
            _check_labels(where + " x", x, expected_ndim=2, num_classes=self.num_classes)
            _check_labels(where + " y", y, expected_ndim=2, num_classes=self.num_classes)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _check_labels(where: str, labels: Tensor, *, expected_ndim: int, num_classes: int) -> None:
    if labels.dtype != torch.int64 or labels.ndim != expected_ndim:
        raise ValueError(
            f"{where}: expected int64 with {expected_ndim} dims, got {labels.dtype} {tuple(labels.shape)}"
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"{where}: labels must lie in [0, {num_classes}), found range [{low}, {high}]")


class TaskDefaults(StrictConfig):
    """Training defaults of a task; a run config may override each of them."""

    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    host_lr: float = Field(gt=0)
    seed_lr: float = Field(gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    max_seeds: int = Field(ge=0)
    # Largest allowed (parameters added by seeds) / (host parameters).
    seed_budget_ratio: float = Field(ge=0)
    # Training batches per epoch (None: the whole training set); large corpora use a cap
    # so one controller step stays short.
    max_batches_per_epoch: int | None = Field(default=None, gt=0)
    # The task's own heuristic settings (HeuristicConfig field -> value), over the heuristic's
    # global defaults; a run's [heuristic] table overrides them field by field. Checked when a
    # plan is resolved (the heuristic's config lives in a layer above the tasks).
    heuristic: dict[str, Any] = Field(default_factory=dict)
    # The task's own gate settings (GateConfig field -> value), over the training default
    # (permissive gates); a run's [gates] table overrides them field by field.
    gates: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_gate_settings(self) -> TaskDefaults:
        try:
            GateConfig.model_validate(self.gates)
        except ValidationError as error:
            raise ValueError(f"gates: {describe_validation_error(GateConfig, error)}") from None
        return self


DataLoaderFn = Callable[[TaskOptions], DataSplits]


@dataclass(frozen=True, kw_only=True)
class Task:
    """A named bundle: host kind + config, data loader, defaults, blueprint rotation.

    `output_key` is the host-config key that must equal the data's class count
    (`num_classes` for CNN hosts, `vocab_size` for GPT hosts). A task whose
    class count is only known from its data (the text task: the vocabulary is
    the corpus's characters) leaves that key out of `host_config`; it is filled
    in by `host_config_for(splits)` / `build_host(splits)`.
    """

    name: str
    description: str
    topology: Topology
    host_kind: str
    host_config: dict[str, Any]
    defaults: TaskDefaults
    data_loader: DataLoaderFn
    default_blueprints: tuple[str, ...]
    output_key: str = "num_classes"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.strip():
            raise ValueError(
                f"Task.name: expected a non-empty name without surrounding spaces, got {self.name!r}"
            )
        if self.topology not in TOPOLOGIES:
            raise ValueError(
                f"Task {self.name!r}.topology: expected one of {TOPOLOGIES}, got {self.topology!r}"
            )
        if not isinstance(self.host_config, dict):
            raise ValueError(
                f"Task {self.name!r}.host_config: expected a dict, got {type(self.host_config).__name__}"
            )
        if not isinstance(self.defaults, TaskDefaults):
            raise ValueError(
                f"Task {self.name!r}.defaults: expected TaskDefaults, got {type(self.defaults).__name__}"
            )
        if not callable(self.data_loader):
            raise ValueError(f"Task {self.name!r}.data_loader: expected a callable, got {self.data_loader!r}")
        blueprints = self.default_blueprints
        if (
            isinstance(blueprints, str)
            or not all(isinstance(b, str) and b for b in blueprints)
            or not blueprints
        ):
            raise ValueError(
                f"Task {self.name!r}.default_blueprints: expected a non-empty sequence of names, "
                f"got {blueprints!r}"
            )
        # A list is accepted for convenience; stored as a tuple so the task stays immutable.
        object.__setattr__(self, "default_blueprints", tuple(blueprints))
        object.__setattr__(self, "host_config", copy.deepcopy(self.host_config))

    def load_data(self, options: TaskOptions) -> DataSplits:
        """Load (or generate) this task's splits; checks they fit the host's output size."""
        if not isinstance(options, TaskOptions):
            raise ValueError(
                f"Task {self.name!r}.load_data: expected TaskOptions, got {type(options).__name__}"
            )
        splits = self.data_loader(options)
        if not isinstance(splits, DataSplits):
            raise ValueError(
                f"Task {self.name!r}: its data_loader returned {type(splits).__name__}, expected DataSplits"
            )
        self.host_config_for(splits)
        return splits

    def host_config_for(self, splits: DataSplits) -> dict[str, Any]:
        """The host config with `output_key` set from the data (and checked if already set)."""
        config = copy.deepcopy(self.host_config)
        if self.output_key in config and config[self.output_key] != splits.num_classes:
            raise ValueError(
                f"Task {self.name!r}: host_config[{self.output_key!r}] is {config[self.output_key]!r} "
                f"but the data has {splits.num_classes} classes"
            )
        config[self.output_key] = splits.num_classes
        return config

    def build_host(self, splits: DataSplits | None = None) -> nn.Module:
        """`esper.hosts.build_host(host_kind, config)`; pass `splits` when the data sizes the host."""
        from esper.hosts import build_host

        if splits is not None:
            return build_host(self.host_kind, self.host_config_for(splits))
        if self.output_key not in self.host_config:
            raise ValueError(
                f"Task {self.name!r}: the host's {self.output_key!r} comes from the data; "
                "call build_host(splits) with the result of load_data(options)"
            )
        return build_host(self.host_kind, copy.deepcopy(self.host_config))
