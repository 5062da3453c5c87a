"""Shared contracts: stage values, transitions, predicates, slot ids, schema versions, no torch."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import esper.contracts.schema as schema
from esper.contracts import (
    EMBARGO_EPOCHS,
    SLOT_FREE_AFTER_PRUNE_TICKS,
    VALID_TRANSITIONS,
    GateLevel,
    GateResult,
    SeedStage,
    SlotId,
    SlotShape,
    format_slot_id,
    is_active,
    is_failure,
    is_terminal,
    is_valid_transition,
    parse_slot_id,
    seed_runs_in_forward,
    sort_slot_ids,
)

S = SeedStage

# ------------------------------------------------------------------ stages

# Copied by hand from SPEC "Lifecycle" (the contract), not from the code.
SPEC_STAGE_VALUES = {
    "UNKNOWN": 0,
    "DORMANT": 1,
    "GERMINATED": 2,
    "TRAINING": 3,
    "BLENDING": 4,
    "HOLDING": 6,
    "FOSSILIZED": 7,
    "PRUNED": 8,
    "EMBARGOED": 9,
    "RESETTING": 10,
}

SPEC_TRANSITIONS = {
    S.UNKNOWN: set(),
    S.DORMANT: {S.GERMINATED},
    S.GERMINATED: {S.TRAINING, S.PRUNED},
    S.TRAINING: {S.BLENDING, S.PRUNED},
    S.BLENDING: {S.HOLDING, S.PRUNED},
    S.HOLDING: {S.FOSSILIZED, S.BLENDING, S.PRUNED},
    S.FOSSILIZED: set(),
    S.PRUNED: {S.EMBARGOED},
    S.EMBARGOED: {S.RESETTING},
    S.RESETTING: {S.DORMANT},
}


def test_stage_values_exactly_as_spec() -> None:
    assert {stage.name: stage.value for stage in SeedStage} == SPEC_STAGE_VALUES


def test_value_5_is_reserved() -> None:
    with pytest.raises(ValueError):
        SeedStage(5)


def test_transition_table_exactly_as_spec() -> None:
    assert set(VALID_TRANSITIONS) == set(SeedStage)
    assert {source: set(targets) for source, targets in VALID_TRANSITIONS.items()} == SPEC_TRANSITIONS


@pytest.mark.parametrize("source", list(SeedStage))
@pytest.mark.parametrize("target", list(SeedStage))
def test_is_valid_transition_matches_table(source: SeedStage, target: SeedStage) -> None:
    assert is_valid_transition(source, target) == (target in SPEC_TRANSITIONS[source])


def test_every_stage_but_unknown_and_fossilized_has_a_way_on() -> None:
    # FOSSILIZED is the only terminal stage; UNKNOWN is never entered.
    dead_ends = {stage for stage, targets in VALID_TRANSITIONS.items() if not targets}
    assert dead_ends == {S.UNKNOWN, S.FOSSILIZED}
    entered = set().union(*VALID_TRANSITIONS.values())
    assert S.UNKNOWN not in entered


def test_predicates() -> None:
    runs = {S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED}
    active = {S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING}
    failure = {S.PRUNED, S.EMBARGOED, S.RESETTING}
    for stage in SeedStage:
        assert seed_runs_in_forward(stage) == (stage in runs), stage
        assert is_active(stage) == (stage in active), stage
        assert is_failure(stage) == (stage in failure), stage
        assert is_terminal(stage) == (stage is S.FOSSILIZED), stage


def test_prune_is_possible_exactly_from_active_stages() -> None:
    assert {stage for stage in SeedStage if S.PRUNED in VALID_TRANSITIONS[stage]} == {
        stage for stage in SeedStage if is_active(stage)
    }


def test_cooldown_constants() -> None:
    # SPEC: embargo lasts 5 epochs; the slot is free again 7 step_epoch ticks after a prune.
    assert EMBARGO_EPOCHS == 5
    assert SLOT_FREE_AFTER_PRUNE_TICKS == 7


# ---------------------------------------------------------------- slot ids


def test_slot_id_roundtrip_examples() -> None:
    assert parse_slot_id("r0c0") == SlotId(0, 0)
    assert parse_slot_id("r2c13") == SlotId(2, 13)
    assert format_slot_id(2, 13) == "r2c13"
    assert str(SlotId(1, 0)) == "r1c0"


@given(st.integers(0, 10_000), st.integers(0, 10_000))
@settings(max_examples=50, deadline=None, database=None, derandomize=True)
def test_slot_id_roundtrip_property(row: int, col: int) -> None:
    text = format_slot_id(row, col)
    assert re.fullmatch(r"r\d+c\d+", text)
    assert parse_slot_id(text) == SlotId(row, col)
    assert str(parse_slot_id(text)) == text


@pytest.mark.parametrize(
    "bad",
    [
        *("", "r0", "c0", "r0c", "rc0", "R0C0", "r-1c0", "r0c-1"),
        *("r01c0", "r0c01", " r0c0", "r0c0 ", "r0c0x", "r1.5c0"),
    ],
)
def test_bad_slot_ids_raise(bad: str) -> None:
    with pytest.raises(ValueError, match="slot id"):
        parse_slot_id(bad)


@pytest.mark.parametrize("bad", [None, 3, b"r0c0", ("r", 0)])
def test_non_string_slot_ids_raise(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a string"):
        parse_slot_id(bad)  # type: ignore[arg-type]


def test_format_refuses_negative() -> None:
    with pytest.raises(ValueError, match="row=-1"):
        format_slot_id(-1, 0)
    with pytest.raises(ValueError, match="col=-2"):
        format_slot_id(0, -2)


def test_sort_is_row_major_and_numeric() -> None:
    ids = ["r1c0", "r0c10", "r0c2", "r10c0", "r0c0", "r2c1", "r1c2"]
    assert sort_slot_ids(ids) == ["r0c0", "r0c2", "r0c10", "r1c0", "r1c2", "r2c1", "r10c0"]


def test_sort_rejects_bad_ids() -> None:
    with pytest.raises(ValueError, match="'x1'"):
        sort_slot_ids(["r0c0", "x1"])


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), unique=True, max_size=12))
@settings(max_examples=50, deadline=None, database=None, derandomize=True)
def test_sort_property(pairs: list[tuple[int, int]]) -> None:
    ids = [format_slot_id(r, c) for r, c in pairs]
    assert sort_slot_ids(reversed(ids)) == [format_slot_id(r, c) for r, c in sorted(pairs)]


# ------------------------------------------------------------ other types


def test_slot_shape_validation() -> None:
    SlotShape("cnn", 8, spatial_dims=1)
    SlotShape("transformer", 8, n_heads=2)
    with pytest.raises(ValueError, match="topology"):
        SlotShape("rnn", 8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="width"):
        SlotShape("cnn", 0, spatial_dims=1)
    with pytest.raises(ValueError, match="spatial_dims"):
        SlotShape("cnn", 8, spatial_dims=3)
    with pytest.raises(ValueError, match="n_heads"):
        SlotShape("transformer", 8, n_heads=3)


def test_gate_result_to_dict_is_primitive() -> None:
    result = GateResult(GateLevel.G2, False, 0.5, ("a",), ("b",), "failed: b")
    data = result.to_dict()
    assert data == {
        "gate": 2,
        "passed": False,
        "score": 0.5,
        "checks_passed": ["a"],
        "checks_failed": ["b"],
        "message": "failed: b",
    }
    assert type(data["gate"]) is int


def test_gate_levels() -> None:
    assert {level.name: level.value for level in GateLevel} == {"G0": 0, "G1": 1, "G2": 2, "G3": 3, "G5": 5}


# --------------------------------------------------------- schema versions


def _versioned() -> dict[str, int]:
    return {
        name.removesuffix("_VERSION"): value
        for name, value in vars(schema).items()
        if name.endswith("_VERSION") and isinstance(value, int)
    }


def test_schema_versions_are_found() -> None:
    # Guard against the discovery below silently finding nothing.
    assert {"MODEL_CHECKPOINT", "SEED_STATE", "RUN_CHECKPOINT", "AGENT_CHECKPOINT"} <= set(_versioned())


@pytest.mark.parametrize("prefix", sorted(_versioned()))
def test_every_schema_version_has_a_changelog_entry(prefix: str) -> None:
    current = _versioned()[prefix]
    assert current >= 1
    changelog = getattr(schema, f"{prefix}_CHANGELOG")
    assert sorted(changelog) == list(range(1, current + 1))
    for version, text in changelog.items():
        assert isinstance(text, str) and text.strip(), f"{prefix} v{version} has an empty changelog entry"


# ------------------------------------------------------------------ no torch


def test_importing_contracts_does_not_import_torch() -> None:
    code = (
        "import sys, esper.contracts, esper.contracts.actions, esper.contracts.schema; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
