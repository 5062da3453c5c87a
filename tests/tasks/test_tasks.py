"""Task bundles, the registry, the cache, MNIST-1D and the `esper tasks` command."""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.utils.data import TensorDataset

from esper.cli import tasks_cmd
from esper.tasks import (
    CACHE_ENV_VAR,
    DataSplits,
    Task,
    TaskDefaults,
    TaskOptions,
    TaskRegistry,
    default_cache_dir,
    default_tasks,
)
from esper.tasks import mnist1d as mnist1d_task_module
from esper.tasks.cache import args_key, load_arrays, save_arrays

BUILTIN = ["mnist1d", "mnist1d-blind", "cifar10", "text"]


@pytest.fixture(scope="module")
def mnist_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir holding generated MNIST-1D (generated once for the module)."""
    cache = tmp_path_factory.mktemp("cache")
    mnist1d_task_module.load_arrays_cached(cache)
    return cache


@pytest.fixture(scope="module")
def mnist_splits(mnist_cache: Path) -> DataSplits:
    return default_tasks().get("mnist1d").load_data(TaskOptions(cache_dir=mnist_cache))


def _defaults(**overrides: object) -> TaskDefaults:
    values: dict[str, object] = {
        "epochs": 3,
        "batch_size": 8,
        "host_lr": 0.01,
        "seed_lr": 0.01,
        "max_seeds": 1,
        "seed_budget_ratio": 1.0,
    }
    values.update(overrides)
    return TaskDefaults(**values)


def _tiny_splits(options: TaskOptions) -> DataSplits:
    gen = torch.Generator().manual_seed(options.seed)
    sets = [TensorDataset(torch.randn(6, 8, generator=gen), torch.arange(6) % 3) for _ in range(3)]
    return DataSplits(*sets, num_classes=3, kind="classification", description="tiny")


def _tiny_task(name: str = "tiny", num_classes: int = 3) -> Task:
    return Task(
        name=name,
        description="a tiny test task",
        topology="cnn",
        host_kind="cnn",
        host_config={"in_channels": 1, "num_classes": num_classes, "widths": [4], "spatial_dims": 1},
        defaults=_defaults(),
        data_loader=_tiny_splits,
        default_blueprints=["norm"],
    )


# ---------------------------------------------------------------- registry


def test_default_registry_has_the_four_builtin_tasks_and_is_cached() -> None:
    assert default_tasks().names() == BUILTIN
    assert default_tasks() is default_tasks()


def test_unknown_task_error_lists_available_tasks() -> None:
    with pytest.raises(ValueError, match="unknown task 'nope'") as info:
        default_tasks().get("nope")
    for name in BUILTIN:
        assert name in str(info.value)


def test_registering_a_name_twice_raises() -> None:
    registry = TaskRegistry()
    registry.register(_tiny_task())
    with pytest.raises(ValueError, match="'tiny' is already registered"):
        registry.register(_tiny_task())
    assert registry.names() == ["tiny"]


def test_user_task_registers_loads_and_builds() -> None:
    registry = TaskRegistry()
    task = registry.register(_tiny_task())
    assert registry.get("tiny") is task and "tiny" in registry
    splits = task.load_data(TaskOptions(cache_dir=Path("unused"), seed=3))
    assert splits.sizes() == {"train": 6, "val": 6, "test": 6}
    host = task.build_host()
    assert host(splits.train.tensors[0]).shape == (6, 3)


def test_task_rejects_data_that_does_not_fit_its_host() -> None:
    task = _tiny_task(num_classes=5)
    with pytest.raises(ValueError, match=r"host_config\['num_classes'\] is 5 but the data has 3 classes"):
        task.load_data(TaskOptions(cache_dir=Path("unused")))


def test_task_rejects_a_loader_returning_something_else() -> None:
    task = Task(
        name="broken",
        description="x",
        topology="cnn",
        host_kind="cnn",
        host_config={},
        defaults=_defaults(),
        data_loader=lambda options: {"train": []},
        default_blueprints=("norm",),
    )
    with pytest.raises(ValueError, match="returned dict, expected DataSplits"):
        task.load_data(TaskOptions(cache_dir=Path("unused")))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("topology", "rnn", "topology"),
        ("default_blueprints", "norm", "default_blueprints"),
        ("default_blueprints", (), "default_blueprints"),
        ("name", " padded ", "Task.name"),
    ],
)
def test_task_fields_are_validated(field: str, value: object, message: str) -> None:
    arguments = {
        "name": "t",
        "description": "d",
        "topology": "cnn",
        "host_kind": "cnn",
        "host_config": {},
        "defaults": _defaults(),
        "data_loader": _tiny_splits,
        "default_blueprints": ("norm",),
    }
    arguments[field] = value
    with pytest.raises(ValueError, match=message):
        Task(**arguments)  # type: ignore[arg-type]


def test_task_defaults_are_strict() -> None:
    assert _defaults().optimizer == "sgd" and _defaults().momentum == 0.9
    with pytest.raises(ValidationError, match="unknown"):
        _defaults(unknown=1)
    with pytest.raises(ValidationError, match="epochs"):
        _defaults(epochs=0)
    with pytest.raises(ValidationError, match="host_lr"):
        _defaults(host_lr="0.1")
    with pytest.raises(ValidationError, match="optimizer"):
        _defaults(optimizer="adam")


def test_task_options_are_validated() -> None:
    with pytest.raises(ValueError, match=r"TaskOptions\.data_dir"):
        TaskOptions(data_dir="/tmp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"TaskOptions\.seed"):
        TaskOptions(seed=1.5)  # type: ignore[arg-type]


def test_data_splits_reject_malformed_labels() -> None:
    x = torch.zeros(4, 3)
    good = TensorDataset(x, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), found range \[0, 3\]"):
        DataSplits(good, good, TensorDataset(x, torch.tensor([0, 1, 2, 3])), 3, "classification", "d")
    with pytest.raises(ValueError, match="expected int64"):
        DataSplits(good, good, TensorDataset(x, torch.zeros(4)), 3, "classification", "d")
    with pytest.raises(ValueError, match="language_model needs a vocab"):
        tokens = TensorDataset(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
        DataSplits(tokens, tokens, tokens, 3, "language_model", "d")


# ---------------------------------------------------------------- cache


def test_cache_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    assert default_cache_dir() == tmp_path
    assert TaskOptions().cache_dir == tmp_path
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert default_cache_dir() == Path.home() / ".cache" / "esper"


def test_cache_round_trip_is_atomic_and_strict(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "data.npz"
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64)}
    save_arrays(path, arrays)
    loaded = load_arrays(path, ("a", "b"))
    assert all(np.array_equal(loaded[key], arrays[key]) for key in arrays)
    assert loaded["a"].dtype == np.float32
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.npz"]  # no temp file left
    with pytest.raises(ValueError, match=r"expected arrays \['a', 'c'\], found \['a', 'b'\]"):
        load_arrays(path, ("a", "c"))
    with pytest.raises(ValueError, match="numeric numpy array"):
        save_arrays(tmp_path / "obj.npz", {"a": np.array([{}], dtype=object)})
    # np.savez would take this name as its own flag and save no array under it.
    with pytest.raises(ValueError, match="'allow_pickle' cannot name an array"):
        save_arrays(tmp_path / "flag.npz", {"allow_pickle": np.zeros(2)})
    assert not (tmp_path / "flag.npz").exists()


def test_cache_refuses_pickled_and_corrupt_files(tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        load_arrays(pickled, ("a",))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"unreadable.*delete it"):
        load_arrays(corrupt, ("a",))


def test_args_key_is_stable_and_sensitive() -> None:
    assert args_key({"a": 1, "b": [1, 2]}) == args_key({"b": [1, 2], "a": 1})
    assert args_key({"a": 1}) != args_key({"a": 2})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        args_key({"a": object()})


# ---------------------------------------------------------------- MNIST-1D


def test_mnist1d_splits_shapes_and_dtypes(mnist_splits: DataSplits) -> None:
    assert mnist_splits.sizes() == {"train": 3500, "val": 500, "test": 1000}
    assert mnist_splits.kind == "classification" and mnist_splits.num_classes == 10
    for dataset in (mnist_splits.train, mnist_splits.val, mnist_splits.test):
        x, y = dataset.tensors
        assert x.dtype == torch.float32 and x.shape[1:] == (40,)
        assert y.dtype == torch.int64 and y.ndim == 1
    assert set(mnist_splits.train.tensors[1].tolist()) == set(range(10))


def test_mnist1d_validation_is_the_last_500_training_signals(mnist_cache: Path, mnist_splits: DataSplits) -> None:
    raw = mnist1d_task_module.load_arrays_cached(mnist_cache)
    assert np.array_equal(mnist_splits.val.tensors[0].numpy(), raw["x"][3500:])
    assert np.array_equal(mnist_splits.train.tensors[1].numpy(), raw["y"][:3500])
    assert np.array_equal(mnist_splits.test.tensors[0].numpy(), raw["x_test"])


def test_mnist1d_second_load_reads_the_cache(mnist_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("make_dataset must not run on a cache hit")

    monkeypatch.setattr(mnist1d_task_module, "_generate", refuse)
    assert mnist1d_task_module.cache_path(mnist_cache).is_file()
    splits = default_tasks().get("mnist1d-blind").load_data(TaskOptions(cache_dir=mnist_cache))
    assert splits.sizes()["train"] == 3500
    # The same patch does bite on a cache miss, so the hit above really read the npz.
    with pytest.raises(AssertionError, match="cache hit"):
        mnist1d_task_module.load_arrays_cached(mnist_cache / "empty")


def test_mnist1d_cache_name_is_remembered_per_package_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = mnist1d_task_module.cache_path(tmp_path)
    key_files = list((tmp_path / "mnist1d").glob("key-mnist1d-*.txt"))
    assert len(key_files) == 1 and key_files[0].read_text(encoding="ascii").strip() in first.name

    def refuse() -> None:
        raise AssertionError("the package's arguments were read again")

    monkeypatch.setattr(mnist1d_task_module, "_generation_args", refuse)
    assert mnist1d_task_module.cache_path(tmp_path) == first  # the key file, not the package
    # A key file holding anything but a hash is not trusted: the package is asked again.
    key_files[0].write_text("../../etc/passwd\n", encoding="ascii")
    with pytest.raises(AssertionError, match="read again"):
        mnist1d_task_module.cache_path(tmp_path)
    monkeypatch.undo()
    assert mnist1d_task_module.cache_path(tmp_path) == first
    assert key_files[0].read_text(encoding="ascii").strip() in first.name
    assert [p.name for p in (tmp_path / "mnist1d").iterdir()] == [key_files[0].name]  # no temp file left


def test_mnist1d_cache_name_without_a_writable_cache_dir(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory", encoding="utf-8")
    # The key file cannot be written under a file: the name is still computed, nothing raised.
    name = mnist1d_task_module.cache_path(tmp_path / "fresh").name
    assert mnist1d_task_module.cache_path(blocked) == blocked / "mnist1d" / name


def test_mnist1d_generation_is_deterministic_offline_and_keeps_global_rng(
    tmp_path: Path, mnist_splits: DataSplits, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("MNIST-1D generation tried to open a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    random.seed(7)
    np.random.seed(7)
    expected_python, expected_numpy = random.random(), np.random.random()
    random.seed(7)
    np.random.seed(7)
    fresh = default_tasks().get("mnist1d").load_data(TaskOptions(cache_dir=tmp_path))
    assert random.random() == expected_python and np.random.random() == expected_numpy
    for split in ("train", "val", "test"):
        for got, want in zip(getattr(fresh, split).tensors, getattr(mnist_splits, split).tensors, strict=True):
            assert torch.equal(got, want)


def test_mnist1d_corrupt_cache_is_reported(tmp_path: Path) -> None:
    path = mnist1d_task_module.cache_path(tmp_path)
    save_arrays(
        path,
        {
            "x": np.zeros((2, 40), np.float32),
            "y": np.zeros(2, np.int64),
            "x_test": np.zeros((2, 40), np.float32),
            "y_test": np.zeros(2, np.int64),
        },
    )
    with pytest.raises(ValueError, match=r"expected float32 \(4000, 40\), found float32 \(2, 40\)"):
        mnist1d_task_module.load_arrays_cached(tmp_path)


@pytest.mark.parametrize(("name", "kernel_size", "pool"), [("mnist1d", 3, True), ("mnist1d-blind", 1, False)])
def test_mnist1d_hosts_build_and_run(mnist_splits: DataSplits, name: str, kernel_size: int, pool: bool) -> None:
    task = default_tasks().get(name)
    assert task.topology == "cnn" and task.host_kind == "cnn"
    assert task.host_config["kernel_size"] == kernel_size and task.host_config["pool"] is pool
    torch.manual_seed(0)
    host = task.build_host()
    same = task.build_host(mnist_splits)
    assert host.config() == same.config()
    assert len(host.slot_ids()) == len(task.host_config["widths"])
    logits = host(mnist_splits.train.tensors[0][:16])
    assert logits.shape == (16, 10) and torch.isfinite(logits).all()
    # The heuristic prefers the first allowed blueprint: conv_heavy on mnist1d (measured to pay
    # most there), conv_light on the blind host (the seed that gives it context).
    preferred = ("conv_heavy", "conv_light") if task.name == "mnist1d" else ("conv_light", "conv_heavy")
    assert task.default_blueprints[:2] == preferred


# ---------------------------------------------------------------- CLI


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="esper")
    tasks_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_tasks_command_prints_a_table(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    assert _run_cli(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in BUILTIN:
        assert name in out
    assert "cnn 1-D [32, 64, 64] k3 pool batch-norm" in out
    assert "gpt d64 h4 L4 T64" in out


def test_tasks_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli(["tasks", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [record["name"] for record in records] == BUILTIN
    by_name = {record["name"]: record for record in records}
    assert by_name["mnist1d"]["default"] is True
    assert by_name["text"]["defaults"]["optimizer"] == "adamw"
    assert by_name["cifar10"]["host_config"]["in_channels"] == 3
    assert by_name["mnist1d"]["defaults"]["epochs"] == default_tasks().get("mnist1d").defaults.epochs


def test_mnist1d_generation_failure_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The generator runs in a child process (it reseeds the global generators of whatever process runs it).
    monkeypatch.setattr(mnist1d_task_module, "_GENERATE_IN_CHILD", "raise SystemExit('no mnist1d here')")
    with pytest.raises(RuntimeError, match=r"MNIST-1D generation failed \(exit status 1\): no mnist1d here"):
        mnist1d_task_module.load_arrays_cached(tmp_path)
    assert not mnist1d_task_module.cache_path(tmp_path).exists()
    monkeypatch.setattr(sys, "executable", "")
    with pytest.raises(RuntimeError, match="no Python interpreter path"):
        mnist1d_task_module.load_arrays_cached(tmp_path)
