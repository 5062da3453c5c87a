"""save/load_checkpoint, strict validation, migrations and CheckpointError messages."""

from __future__ import annotations

import collections
import datetime
import enum
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

import esper
from esper.checkpoints import migrations
from esper.checkpoints.errors import CheckpointError, join_path
from esper.checkpoints.io import (
    HEADER_KEYS,
    check_primitive_tree,
    load_checkpoint,
    peek_format,
    save_checkpoint,
    split_header,
)
from esper.checkpoints.strict import require_keys, validate
from esper.contracts.schema import (
    MODEL_CHECKPOINT_FORMAT,
    MODEL_CHECKPOINT_VERSION,
    RUN_CHECKPOINT_FORMAT,
    RUN_CHECKPOINT_VERSION,
)
from esper.contracts.validation import describe_annotation

MODEL = {"format": MODEL_CHECKPOINT_FORMAT, "schema_version": MODEL_CHECKPOINT_VERSION}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Metrics(_Strict):
    counterfactual_contribution: float | None
    epochs: int
    accuracy: Annotated[float, Field(ge=0.0, le=100.0)]


class SeedStateModel(_Strict):
    stage: int
    blueprint_id: str
    history: list[int]
    metrics: Metrics
    note: int | str
    mode: Literal["hold", "up", "down"]


class SlotModel(_Strict):
    seed_state: SeedStateModel | None
    extras: dict[str, float]


def _slot_data(**metric_overrides: object) -> dict[str, Any]:
    metrics: dict[str, Any] = {"counterfactual_contribution": None, "epochs": 3, "accuracy": 51.5}
    metrics.update(metric_overrides)
    state = {"stage": 3, "blueprint_id": "norm", "history": [1, 2, 3], "metrics": metrics}
    state.update(note=1, mode="up")
    return {"seed_state": state, "extras": {"a": 1.0}}


# ---------------------------------------------------------------- errors


def test_checkpoint_error_formats_paths_and_file() -> None:
    assert join_path("seed_slots.r0c1", "", "history", 2) == "seed_slots.r0c1 > history > [2]"
    single = CheckpointError.at("a > b", "expected float or None, got str")
    assert str(single) == "a > b: expected float or None, got str"
    assert isinstance(single, ValueError)
    plain = CheckpointError("x: expected dict, got list")
    assert plain.problems == ("x: expected dict, got list",)  # a str is one problem, not characters
    many = CheckpointError.many([("a", "missing required key"), ("", "unknown")], file="/tmp/c.pt")
    assert str(many) == "checkpoint /tmp/c.pt: 2 problems:\n  - a: missing required key\n  - <root>: unknown"
    assert str(single.with_file("f.pt")) == "checkpoint f.pt: a > b: expected float or None, got str"
    with pytest.raises(ValueError, match="at least one problem"):
        CheckpointError([])


# ---------------------------------------------------------------- strict validation


def test_validate_accepts_good_data_and_ints_for_floats() -> None:
    slot = validate(SlotModel, _slot_data(counterfactual_contribution=2))
    assert slot.seed_state is not None and slot.seed_state.metrics.counterfactual_contribution == 2


def test_validate_names_the_exact_path_like_slot_1() -> None:
    with pytest.raises(CheckpointError) as info:
        validate(SlotModel, _slot_data(counterfactual_contribution="0.5"), where="seed_slots.r0c1")
    path = "seed_slots.r0c1 > seed_state > metrics > counterfactual_contribution"
    assert str(info.value) == f"{path}: expected float or None, got str"


def test_validate_lists_every_problem_in_one_error() -> None:
    data = _slot_data(epochs="3", accuracy=-1.0)
    state = data["seed_state"]
    del state["blueprint_id"]
    state["surprise"] = 1
    state["history"] = [1, "2"]
    state["note"] = 1.5
    state["mode"] = "sideways"
    data["extras"] = {"a": "x", 3: 1.0}
    with pytest.raises(CheckpointError) as info:
        validate(SlotModel, data)
    problems = set(info.value.problems)
    assert problems == {
        "seed_state > blueprint_id: missing required key",
        "seed_state > surprise: unknown key (valid keys: stage, blueprint_id, history, metrics, note, mode)",
        "seed_state > history > [1]: expected int, got str",
        "seed_state > metrics > epochs: expected int, got str",
        "seed_state > metrics > accuracy: expected a value >= 0.0, got -1.0",
        "seed_state > note: expected int or str, got float",
        "seed_state > mode: expected 'hold', 'up' or 'down', got 'sideways'",
        "extras > a: expected float, got str",
        "extras > [3]: dict key: expected str, got int",
    }


def test_validate_top_level_and_strictness() -> None:
    with pytest.raises(CheckpointError, match=r"^slot: expected dict \(SlotModel\), got list$"):
        validate(SlotModel, [1], where="slot")
    for bad in (True, "1", 1.0):  # strict: no bool->int, str->int or float->int coercion
        with pytest.raises(CheckpointError, match="seed_state > stage: expected int, got"):
            validate(SlotModel, {**_slot_data(), "seed_state": {**_slot_data()["seed_state"], "stage": bad}})


def test_describe_annotation() -> None:
    assert describe_annotation(float | None) == "float or None"
    assert describe_annotation(None | int) == "int or None"
    assert describe_annotation(list[int | None]) == "list[int or None]"
    assert describe_annotation(dict[str, Metrics]) == "dict[str, dict (Metrics)]"
    assert describe_annotation(Annotated[float, Field(ge=0)]) == "float"
    assert describe_annotation(Literal["a", 1]) == "'a' or 1"


_NOT_FLOAT = st.one_of(
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(), st.none()),
)


@settings(max_examples=60, deadline=None)
@given(value=_NOT_FLOAT)
def test_any_non_number_for_optional_float_is_named(value: object) -> None:
    with pytest.raises(CheckpointError) as info:
        validate(Metrics, {"counterfactual_contribution": value, "epochs": 1, "accuracy": 1.0}, where="m")
    assert info.value.problems == (
        f"m > counterfactual_contribution: expected float or None, got {type(value).__name__}",
    )


def test_require_keys() -> None:
    data = {"a": 1, "b": 2}
    assert require_keys(data, {"a", "b"}, "slots") is data
    with pytest.raises(CheckpointError) as info:
        require_keys({"a": 1, "c": 2, 5: 0}, {"a", "b"}, "slots")
    assert set(info.value.problems) == {
        "slots > 5: dict key: expected str, got int",
        "slots > b: missing required key",
        "slots > c: unknown key",
    }
    with pytest.raises(CheckpointError, match=r"^slots: expected dict, got list$"):
        require_keys([], {"a"}, "slots")


# ---------------------------------------------------------------- save / load


def _payload() -> dict[str, Any]:
    return {
        "model": {"w": torch.arange(6.0).reshape(2, 3), "p": torch.nn.Parameter(torch.ones(2))},
        "meta": {"stage": 3, "alpha": 0.5, "name": "norm", "flag": True, "none": None, "hist": [[1, "x"]]},
    }


def test_save_load_round_trip_with_header(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(_payload(), path, **MODEL)
    data = load_checkpoint(path, format=MODEL_CHECKPOINT_FORMAT)
    header, body = split_header(data)
    assert set(header) == HEADER_KEYS
    assert header["format"] == MODEL_CHECKPOINT_FORMAT
    assert header["schema_version"] == MODEL_CHECKPOINT_VERSION
    assert header["esper_version"] == esper.__version__ and header["torch_version"] == str(torch.__version__)
    created = datetime.datetime.fromisoformat(header["created_at"])
    assert created.utcoffset() == datetime.timedelta(0)
    assert torch.equal(body["model"]["w"], torch.arange(6.0).reshape(2, 3))
    assert body["meta"] == _payload()["meta"]
    assert peek_format(path) == MODEL_CHECKPOINT_FORMAT


class _Stage(enum.IntEnum):
    TRAINING = 3


@pytest.mark.parametrize(
    ("bad", "where", "got"),
    [
        ((1, 2), "meta > hist", "got tuple (use a list)"),
        ({1, 2}, "meta > hist", "got set"),
        (_Stage.TRAINING, "meta > hist", "got _Stage"),
        (datetime.datetime(2024, 1, 1), "meta > hist", "got datetime"),
        (collections.deque([1]), "meta > hist", "got deque"),
        (collections.OrderedDict(a=1), "meta > hist", "got OrderedDict"),
        (np.zeros(2), "meta > hist", "got ndarray"),
        (torch.nn.Linear(1, 1), "meta > hist", "got Linear"),
        ([[1, b"raw"]], "meta > hist > [0] > [1]", "got bytes"),
        ({3.5: 1}, "meta > hist > 3.5", "dict key: expected str or int, got float"),
    ],
)
def test_save_refuses_unreadable_values(tmp_path: Path, bad: object, where: str, got: str) -> None:
    payload = _payload()
    payload["meta"]["hist"] = bad
    path = tmp_path / "bad.pt"
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(payload, path, **MODEL)
    assert str(info.value).startswith(f"{where}: ")
    assert got in str(info.value)
    assert not path.exists()


def test_save_refuses_cycles_reserved_keys_and_wrong_version(tmp_path: Path) -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(CheckpointError, match=r"^loop > \[0\]: container contains itself"):
        check_primitive_tree({"loop": cyclic})
    shared = [1]
    check_primitive_tree({"a": shared, "b": shared})  # shared, not cyclic: fine
    with pytest.raises(CheckpointError, match=r"^format: reserved header key"):
        save_checkpoint({"format": "x"}, tmp_path / "r.pt", **MODEL)
    with pytest.raises(ValueError, match="only the current version 1 is written"):
        save_checkpoint({}, tmp_path / "v.pt", format=MODEL_CHECKPOINT_FORMAT, schema_version=7)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tree=st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_any_primitive_tree_round_trips(tmp_path: Path, tree: object) -> None:
    path = tmp_path / "tree.pt"
    save_checkpoint({"tree": tree}, path, **MODEL)
    loaded = load_checkpoint(path, format=MODEL_CHECKPOINT_FORMAT)["tree"]
    assert loaded == tree and repr(loaded) == repr(tree)  # repr also tells -0.0 from 0.0, 1 from True


def test_load_refuses_other_format_and_bad_files(tmp_path: Path) -> None:
    run = tmp_path / "run.pt"
    save_checkpoint({}, run, format=RUN_CHECKPOINT_FORMAT, schema_version=RUN_CHECKPOINT_VERSION)
    with pytest.raises(CheckpointError, match=r"format: expected format 'esper\.model', got 'esper\.run'"):
        load_checkpoint(run, format=MODEL_CHECKPOINT_FORMAT)
    assert peek_format(run) == RUN_CHECKPOINT_FORMAT

    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt", format=MODEL_CHECKPOINT_FORMAT)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"garbage\.pt.*weights_only=True.*esper audit"):
        load_checkpoint(garbage, format=MODEL_CHECKPOINT_FORMAT)

    pickled_enum = tmp_path / "enum.pt"
    torch.save({**MODEL, "stage": _Stage.TRAINING}, pickled_enum)  # plain torch.save: not weights_only-safe
    why = r"UnpicklingError: Unsupported global: GLOBAL .*_Stage.*\(run `esper audit .*enum\.pt`"
    with pytest.raises(CheckpointError, match=why):
        load_checkpoint(pickled_enum, format=MODEL_CHECKPOINT_FORMAT)

    not_dict = tmp_path / "list.pt"
    torch.save([1, 2], not_dict)
    with pytest.raises(CheckpointError, match=r"list\.pt: <root>: expected dict, got list$"):
        load_checkpoint(not_dict, format=MODEL_CHECKPOINT_FORMAT)
    headless = tmp_path / "headless.pt"
    torch.save({"format": MODEL_CHECKPOINT_FORMAT, "schema_version": "1"}, headless)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(headless, format=MODEL_CHECKPOINT_FORMAT)
    assert "schema_version: expected int, got str" in info.value.problems
    assert "created_at: missing required key" in info.value.problems


# ---------------------------------------------------------------- migrations


@pytest.fixture
def test_format(monkeypatch: pytest.MonkeyPatch) -> str:
    """A test-only format; the migration registry is emptied for the test and restored after."""
    monkeypatch.setattr(migrations, "_REGISTRY", {})
    monkeypatch.setitem(migrations.CURRENT_VERSIONS, "test.format", 0)
    return "test.format"


def test_migration_upgrades_old_files(
    tmp_path: Path, test_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.pt"
    save_checkpoint({"lr": 0.1}, path, format=test_format, schema_version=0)

    @migrations.register_migration(test_format, 0)
    def rename_lr(payload: dict[str, Any]) -> dict[str, Any]:
        payload["learning_rate"] = payload.pop("lr")
        return payload

    monkeypatch.setitem(migrations.CURRENT_VERSIONS, test_format, 1)
    data = load_checkpoint(path, format=test_format)
    assert data["schema_version"] == 1 and data["learning_rate"] == 0.1 and "lr" not in data
    assert migrations.supported_versions(test_format) == [0, 1]
    with pytest.raises(ValueError, match="already registered"):
        migrations.register_migration(test_format, 0)(rename_lr)


def test_migration_gap_and_newer_version_raise(
    tmp_path: Path, test_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.pt"
    save_checkpoint({}, path, format=test_format, schema_version=0)
    migrations.register_migration(test_format, 0)(lambda payload: payload)
    monkeypatch.setitem(migrations.CURRENT_VERSIONS, test_format, 2)  # no 1 -> 2 step
    with pytest.raises(CheckpointError, match=r"no migration from version 1 to 2 \(supported: 2\)"):
        load_checkpoint(path, format=test_format)

    monkeypatch.setitem(migrations.CURRENT_VERSIONS, test_format, 5)
    newer = tmp_path / "newer.pt"
    save_checkpoint({}, newer, format=test_format, schema_version=5)
    monkeypatch.setitem(migrations.CURRENT_VERSIONS, test_format, 1)
    with pytest.raises(CheckpointError, match=r"version 5 of 'test.format' is newer .*\(supported: 0, 1\)"):
        load_checkpoint(newer, format=test_format)


def test_migration_must_return_a_dict(test_format: str, monkeypatch: pytest.MonkeyPatch) -> None:
    migrations.register_migration(test_format, 0)(lambda payload: [payload])  # type: ignore[arg-type,return-value]
    monkeypatch.setitem(migrations.CURRENT_VERSIONS, test_format, 1)
    with pytest.raises(TypeError, match="returned list, expected dict"):
        migrations.migrate({"schema_version": 0}, test_format)
    with pytest.raises(CheckpointError, match="unknown checkpoint format 'nope'"):
        migrations.current_version("nope")
    assert math.isfinite(migrations.current_version(MODEL_CHECKPOINT_FORMAT))
