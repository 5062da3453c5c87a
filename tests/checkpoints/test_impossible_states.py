"""Types are not enough: a checkpoint holding a slot state the slot can never be in is refused, by path.

The model (from the mutation tests): r0c0 holds a GATE seed mid-BLENDING
(target 0.7, step 2 of 5), r0c1 a FOSSILIZED seed, r0c2 an EMBARGOED one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.checkpoints.test_mutation_fuzz import staged_model

from esper.checkpoints import CheckpointError, load_model, save_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    directory = tmp_path_factory.mktemp("model")
    save_model(staged_model(), directory / "model.pt")
    return torch.load(directory / "model.pt", weights_only=True), directory


def slot(name: str, *path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target = data["seed_slots"][name]
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


def _fossil_still_ramping(data: dict[str, Any]) -> None:
    alpha = data["seed_slots"]["r0c1"]["alpha"]
    alpha.update(mode=1, start=0.0, steps_total=4, steps_done=1, alpha=0.25)


def _training_with_alpha(data: dict[str, Any]) -> None:
    state = data["seed_slots"]["r0c0"]["seed_state"]
    state["history"] = state["history"][:-1]
    state["stage"] = state["history"][-1]["stage"]
    state["previous_stage"] = state["history"][-2]["stage"]


CASES = [
    (
        slot("r0c0", "seed_state", "blend_steps", value=-1),
        "seed_slots.r0c0 > seed_state > blend_steps: expected a value >= 0",
    ),
    (
        slot("r0c0", "seed_state", "alpha_target", value=0.6),
        "seed_slots.r0c0 > seed_state > alpha_target: expected one of",
    ),
    (slot("r0c0", "alpha", "target", value=1.0), "seed_slots.r0c0 > alpha"),
    (slot("r0c0", "alpha", "alpha", value=0.5), "seed_slots.r0c0 > alpha: expected 0.2799"),
    (slot("r0c0", "tick", value=9), "seed_slots.r0c0 > seed_state > metrics > epochs_in_stage: expected 8"),
    (slot("r0c0", "seed_state", "metrics", "epochs_in_stage", value=-2), "epochs_in_stage: expected a value >= 0"),
    (
        slot("r0c0", "seed_state", "metrics", "epochs_total", value=40),
        "seed_slots.r0c0 > seed_state > metrics > epochs_total",
    ),
    (slot("r0c0", "seed_state", "metrics", "current_accuracy", value=1.5), "current_accuracy: expected a value <= 1"),
    (
        slot("r0c0", "seed_state", "previous_stage", value=2),
        "seed_slots.r0c0 > seed_state > previous_stage: expected TRAINING",
    ),
    (slot("r0c0", "seed_state", "prune_reason", value="why"), "seed_slots.r0c0 > seed_state > prune_reason"),
    (_training_with_alpha, "seed_slots.r0c0 > alpha: stage TRAINING holds a fresh controller"),
    (_fossil_still_ramping, "seed_slots.r0c1 > alpha"),
    (slot("r0c1", "alpha", "alpha", value=0.7), "seed_slots.r0c1 > alpha"),
    (slot("r0c2", "seed_state", "metrics", "epochs_in_stage", value=7), "seed_slots.r0c2 > seed_state > metrics"),
    (
        slot("r0c2", "seed_state", "prune_reason", value=None),
        "seed_slots.r0c2 > seed_state > prune_reason: a pruned seed",
    ),
    (slot("r0c2", "seed_state", "history", value=[]), "seed_slots.r0c2 > seed_state > history: expected at least"),
]


@pytest.mark.parametrize(("edit", "expected"), CASES)
def test_an_impossible_slot_state_is_refused_by_path(saved: Any, edit: Any, expected: str) -> None:
    payload, directory = saved
    data = copy.deepcopy(payload)
    edit(data)
    path = directory / "tampered.pt"
    torch.save(data, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert expected in str(info.value)


def test_the_untouched_checkpoint_loads(saved: Any) -> None:
    payload, directory = saved
    torch.save(payload, directory / "same.pt")
    model = load_model(directory / "same.pt")
    assert [s.stage.name for s in model.slots()] == ["BLENDING", "FOSSILIZED", "EMBARGOED"]
    assert model.slot("r0c0").alpha.mode.name == "UP"
