"""The one formatter of validation problems (esper.contracts.validation).

Checkpoints, run/PPO config files and host configs all report through it, so
its wording is tested here once: paths, unknown keys with the valid ones,
field-blaming cross-field checks and problems nested under a field.
"""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from esper.contracts.validation import (
    ConfigProblems,
    FieldError,
    describe_validation_error,
    dotted_path,
    problem_parts,
    validation_problems,
)
from esper.hosts import build_host


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    epochs: int
    rate: Annotated[float, Field(gt=0.0)]


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    widths: list[Annotated[int, Field(ge=1)]]
    inner: Inner
    low: int = 0
    high: int = 1
    # Validated against Inner by hand (a table of overrides), like the PPO run's `train`.
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _overrides_are_inner(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            Inner.model_validate({"epochs": 1, "rate": 1.0, **value})
        except ValidationError as error:
            raise ConfigProblems(problem_parts(Inner, error)) from None
        return value

    @field_validator("low")
    @classmethod
    def _even_low(cls, value: int) -> int:
        if value % 2:
            raise FieldError("low", f"expected an even int, got {value}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Outer:
        if self.high <= self.low:
            raise FieldError("high", f"must be > low ({self.low}), got {self.high}")
        return self


GOOD: dict[str, Any] = {"widths": [4, 8], "inner": {"epochs": 2, "rate": 0.5}}


def errors_of(data: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    return info.value


def test_paths_name_list_items_and_nested_keys() -> None:
    error = errors_of({**GOOD, "widths": [4, 0], "inner": {"epochs": "2", "rate": 0.5}})
    assert set(validation_problems(Outer, error, where="cfg")) == {
        ("cfg > widths > [1]", "expected a value >= 1, got 0"),
        ("cfg > inner > epochs", "expected int, got str"),
    }
    assert describe_validation_error(Outer, error) == (
        "widths[1]: expected a value >= 1, got 0; inner.epochs: expected int, got str"
    )


def test_unknown_keys_list_the_valid_ones() -> None:
    error = errors_of({**GOOD, "colour": 1, "inner": {"epochs": 2, "rate": 0.5, "speed": 3}})
    assert set(validation_problems(Outer, error)) == {
        ("colour", "unknown key (valid keys: widths, inner, low, high, overrides)"),
        ("inner > speed", "unknown key (valid keys: epochs, rate)"),
    }


def test_a_cross_field_check_is_reported_at_the_field_it_blames() -> None:
    error = errors_of({**GOOD, "low": 4, "high": 2})
    assert problem_parts(Outer, error) == [(("high",), "must be > low (4), got 2")]


def test_a_field_check_blaming_its_own_field_names_it_once() -> None:
    error = errors_of({**GOOD, "low": 3})
    assert problem_parts(Outer, error) == [(("low",), "expected an even int, got 3")]


def test_problems_raised_by_a_field_check_are_reported_below_the_field() -> None:
    error = errors_of({**GOOD, "overrides": {"rate": -1.0, "epochs": "x"}})
    assert describe_validation_error(Outer, error) == (
        "overrides.epochs: expected int, got str; overrides.rate: expected a value > 0.0, got -1.0"
    )


def test_dotted_path() -> None:
    assert dotted_path(["ppo", "learning_rate"]) == "ppo.learning_rate"
    assert dotted_path(["widths", 1]) == "widths[1]"
    assert dotted_path(["", "a", 0, "b"]) == "a[0].b"


def test_a_host_config_error_carries_each_problem_at_its_key() -> None:
    config = {"in_channels": 1, "num_classes": 2, "widths": [4, 0], "spatial_dims": 1, "colour": "red"}
    with pytest.raises(ConfigProblems) as info:
        build_host("cnn", config)
    assert info.value.subject == "cnn host config"
    assert ((("widths", 1), "expected a value >= 1, got 0")) in info.value.problems
    assert str(info.value).startswith("cnn host config: ")
    assert isinstance(info.value, ValueError)
