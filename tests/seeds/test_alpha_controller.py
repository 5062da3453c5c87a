"""Alpha curves and the alpha controller: exact endpoints, ramps, strict persistence."""

from __future__ import annotations

import itertools
import math

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.contracts.alpha import ALPHA_RAMP_STEPS, SIGMOID_STEEPNESS, AlphaCurve, AlphaMode
from esper.seeds.alpha_controller import AlphaController, AlphaControllerError, curve_value

STEEPNESS = st.floats(min_value=0.5, max_value=200.0, allow_nan=False)
GRID = [i / 64 for i in range(65)]


# ---------------------------------------------------------------- curves


@settings(max_examples=60, deadline=None)
@given(steepness=STEEPNESS)
def test_curves_exact_endpoints_monotone_and_finite(steepness: float) -> None:
    for curve in AlphaCurve:
        assert curve_value(curve, 0.0, steepness) == 0.0
        assert curve_value(curve, 1.0, steepness) == 1.0
        values = [curve_value(curve, p, steepness) for p in GRID]
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)
        assert all(a <= b for a, b in itertools.pairwise(values)), (curve, values)


@settings(max_examples=80, deadline=None)
@given(
    steepness=STEEPNESS,
    p=st.floats(min_value=0.0, max_value=1.0),
    q=st.floats(min_value=0.0, max_value=1.0),
)
def test_curves_monotone_between_arbitrary_points(steepness: float, p: float, q: float) -> None:
    low, high = sorted((p, q))
    for curve in AlphaCurve:
        assert curve_value(curve, low, steepness) <= curve_value(curve, high, steepness)


def test_curve_formulas() -> None:
    assert curve_value(AlphaCurve.LINEAR, 0.3) == 0.3
    assert curve_value(AlphaCurve.COSINE, 0.5) == pytest.approx(0.5)
    assert curve_value(AlphaCurve.COSINE, 0.25) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    k = 12.0

    def s(z: float) -> float:
        return 1.0 / (1.0 + math.exp(-z))

    for p in (0.1, 0.25, 0.5, 0.8):
        expected = (s(k * (p - 0.5)) - s(-k / 2)) / (s(k / 2) - s(-k / 2))
        assert curve_value(AlphaCurve.SIGMOID, p, k) == pytest.approx(expected, rel=1e-12)
    # Steeper sigmoid is further below linear early on and above it late.
    assert curve_value(AlphaCurve.SIGMOID, 0.2, 24.0) < curve_value(AlphaCurve.SIGMOID, 0.2, 6.0)
    assert curve_value(AlphaCurve.SIGMOID, 0.8, 24.0) > curve_value(AlphaCurve.SIGMOID, 0.8, 6.0)


def test_sigmoid_extreme_steepness_is_stable() -> None:
    for k in (200.0, 1e4, 1e300):
        values = [curve_value(AlphaCurve.SIGMOID, p, k) for p in GRID]
        assert all(math.isfinite(v) for v in values)
        assert curve_value(AlphaCurve.SIGMOID, 0.5, k) == pytest.approx(0.5)
    # Vanishing steepness tends to the straight line.
    assert curve_value(AlphaCurve.SIGMOID, 0.3, 1e-12) == pytest.approx(0.3, abs=1e-15)
    assert curve_value(AlphaCurve.SIGMOID, 0.3, 1e-320) == pytest.approx(0.3, abs=1e-15)


@pytest.mark.parametrize("progress", [-0.01, 1.0001, math.nan, math.inf])
def test_curve_rejects_progress_outside_unit_interval(progress: float) -> None:
    with pytest.raises(ValueError, match="progress"):
        curve_value(AlphaCurve.LINEAR, progress)


@pytest.mark.parametrize("steepness", [0.0, -1.0, math.nan, math.inf])
def test_curve_rejects_bad_steepness(steepness: float) -> None:
    with pytest.raises(ValueError, match="steepness"):
        curve_value(AlphaCurve.SIGMOID, 0.5, steepness)


def test_curve_rejects_non_enum_curve() -> None:
    with pytest.raises(ValueError, match="curve"):
        curve_value(2, 0.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- controller


def test_fresh_controller_holds_at_zero() -> None:
    c = AlphaController()
    assert (c.alpha, c.target, c.mode) == (0.0, 0.0, AlphaMode.HOLD)
    assert c.at_target
    assert c.step() == 0.0
    assert c.mode is AlphaMode.HOLD


def _ramp(c: AlphaController, target: float, steps: int, curve: AlphaCurve, k: float) -> list[float]:
    before = c.alpha
    c.retarget(target, steps, curve, k)
    if steps == 0 or target == before:
        assert c.mode is AlphaMode.HOLD
        assert c.alpha == target
        return []
    assert c.mode is (AlphaMode.UP if target > before else AlphaMode.DOWN)
    assert c.start == before
    seen = []
    for i in range(steps):
        assert not c.at_target
        seen.append(c.step())
        assert c.steps_done == i + 1
    assert c.alpha == target  # exactly
    assert c.mode is AlphaMode.HOLD and c.at_target
    assert c.step() == target  # holding does not move
    return seen


@pytest.mark.parametrize("curve", list(AlphaCurve))
@pytest.mark.parametrize("steps", ALPHA_RAMP_STEPS)
@pytest.mark.parametrize("steepness", SIGMOID_STEEPNESS)
def test_ramps_land_exactly_on_target(curve: AlphaCurve, steps: int, steepness: float) -> None:
    c = AlphaController()
    for target in (0.5, 1.0, 0.7, 0.0, 0.7, 0.5, 1.0):
        start = c.alpha
        seen = _ramp(c, target, steps, curve, steepness)
        low, high = sorted((start, target))
        assert all(low <= a <= high for a in seen)
        ordered = seen if target >= start else seen[::-1]
        assert ordered == sorted(ordered)


def test_linear_ramp_values() -> None:
    c = AlphaController()
    c.retarget(1.0, 4)
    assert [c.step() for _ in range(4)] == [0.25, 0.5, 0.75, 1.0]
    c.retarget(0.5, 2)
    assert c.mode is AlphaMode.DOWN
    assert [c.step() for _ in range(2)] == [0.75, 0.5]


def test_retarget_to_current_alpha_and_jump_stay_in_hold() -> None:
    c = AlphaController()
    c.retarget(0.0, 5)
    assert c.mode is AlphaMode.HOLD and c.steps_total == 0
    c.retarget(0.7, 0)
    assert c.mode is AlphaMode.HOLD and c.alpha == 0.7 and c.at_target


def test_retarget_refused_outside_hold_leaves_state_untouched() -> None:
    c = AlphaController()
    c.retarget(1.0, 5, AlphaCurve.COSINE)
    c.step()
    before = c.to_dict()
    with pytest.raises(AlphaControllerError, match="UP"):
        c.retarget(0.5, 3)
    assert c.to_dict() == before
    for _ in range(4):
        c.step()
    c.retarget(0.0, 3)
    c.step()
    before = c.to_dict()
    with pytest.raises(AlphaControllerError, match="DOWN"):
        c.retarget(1.0, 0)
    assert c.to_dict() == before


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((1.5, 3), "target"),
        ((-0.1, 3), "target"),
        ((math.nan, 3), "target"),
        (("1.0", 3), "target"),
        ((0.5, -1), "steps"),
        ((0.5, 3.0), "steps"),
        ((0.5, True), "steps"),
        ((0.5, 3, 2), "curve"),
        ((0.5, 3, AlphaCurve.SIGMOID, 0.0), "steepness"),
    ],
)
def test_retarget_rejects_bad_arguments(args: tuple, field: str) -> None:
    c = AlphaController()
    c.retarget(0.5, 0)
    before = c.to_dict()
    with pytest.raises(AlphaControllerError, match=field):
        c.retarget(*args)
    assert c.to_dict() == before


# ---------------------------------------------------------------- persistence

OPERATION = st.one_of(
    st.tuples(
        st.just("retarget"),
        st.sampled_from([0.0, 0.5, 0.7, 1.0]),
        st.sampled_from(ALPHA_RAMP_STEPS),
        st.sampled_from(list(AlphaCurve)),
        st.sampled_from(SIGMOID_STEEPNESS),
    ),
    st.tuples(st.just("step")),
)


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(OPERATION, max_size=12))
def test_round_trip_preserves_state_and_future(ops: list[tuple]) -> None:
    c = AlphaController()
    for op in ops:
        if op[0] == "step":
            c.step()
        elif c.mode is AlphaMode.HOLD:
            c.retarget(*op[1:])
    data = c.to_dict()
    assert all(type(v) in (int, float) for v in data.values())
    restored = AlphaController.from_dict(data)
    assert restored.to_dict() == data
    assert restored.mode is c.mode and restored.curve is c.curve
    # Both continue identically.
    assert [restored.step() for _ in range(9)] == [c.step() for _ in range(9)]


def _valid_dict() -> dict:
    c = AlphaController()
    c.retarget(1.0, 5, AlphaCurve.SIGMOID, 6.0)
    c.step()
    return c.to_dict()


def test_from_dict_missing_key() -> None:
    data = _valid_dict()
    del data["steepness"]
    with pytest.raises(pydantic.ValidationError, match="steepness"):
        AlphaController.from_dict(data)


def test_from_dict_unknown_key() -> None:
    data = _valid_dict() | {"velocity": 0.0}
    with pytest.raises(pydantic.ValidationError, match="velocity"):
        AlphaController.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [("alpha", "0.2"), ("alpha", None), ("steps_done", 1.0), ("steps_total", True), ("mode", "UP")],
)
def test_from_dict_wrong_type(field: str, value: object) -> None:
    data = _valid_dict() | {field: value}
    with pytest.raises(pydantic.ValidationError, match=field):
        AlphaController.from_dict(data)


@pytest.mark.parametrize(("field", "value"), [("mode", 3), ("curve", -1), ("curve", 7)])
def test_from_dict_bad_enum_value(field: str, value: int) -> None:
    data = _valid_dict() | {field: value}
    with pytest.raises(pydantic.ValidationError, match=field):
        AlphaController.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alpha", 1.5),
        ("alpha", math.nan),
        ("target", -0.5),
        ("start", 2.0),
        ("steepness", 0.0),
        ("steepness", math.inf),
        ("steps_done", -1),
    ],
)
def test_from_dict_out_of_range(field: str, value: object) -> None:
    data = _valid_dict() | {field: value}
    with pytest.raises(pydantic.ValidationError, match=field):
        AlphaController.from_dict(data)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps_done": 6}, "steps_done"),  # more steps done than the ramp has
        ({"steps_done": 5}, "steps_done < steps_total"),  # UP with no step left
        ({"mode": int(AlphaMode.DOWN)}, "does not match"),  # direction contradicts start/target
        ({"alpha": 0.0, "start": 0.5}, "between start"),  # alpha outside the ramp
    ],
)
def test_from_dict_inconsistent_ramp(changes: dict, message: str) -> None:
    data = _valid_dict() | changes
    with pytest.raises(pydantic.ValidationError, match=message):
        AlphaController.from_dict(data)


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(pydantic.ValidationError):
        AlphaController.from_dict([("alpha", 0.0)])
