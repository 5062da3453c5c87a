"""Grower (growth in a hand-written loop) and the documented example that uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esper.adapters import Grower, attach
from esper.contracts.actions import Op
from esper.control import Decision, EpochSignals
from esper.seeds.gates import GateConfig

from .models import images, resnet

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "grow_in_your_loop.py"


class Scripted:
    """A controller that plays a fixed list of decisions, then waits."""

    name = "scripted"

    def __init__(self, decisions: list[Decision]) -> None:
        self.decisions = list(decisions)
        self.seen: list[EpochSignals] = []

    def decide(self, signals: EpochSignals, model: object) -> Decision:
        self.seen.append(signals)
        return self.decisions.pop(0) if self.decisions else Decision(Op.WAIT)

    def state_dict(self) -> dict[str, object]:
        return {"left": len(self.decisions)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        del self.decisions[: len(self.decisions) - int(state["left"])]  # type: ignore[call-overload]


def _epoch(grower: Grower, accuracy: float = 0.5) -> object:
    x = images(6)
    return grower.end_epoch(
        train_loss=1.0, train_accuracy=accuracy, val_loss=1.0, val_accuracy=accuracy, measure_on=(x, torch.arange(6))
    )


def test_end_epoch_decides_executes_and_reports_seed_changes() -> None:
    model = attach(resnet(), slots=["layer1", "layer2"], example_input=images(), gates=GateConfig(permissive=True))
    script = Scripted([Decision(Op.GERMINATE, slot="r0c1", blueprint="conv_light"), Decision(Op.ADVANCE, slot="r0c1")])
    grower = Grower(model, script, max_epochs=5)
    model.eval()
    first = _epoch(grower)
    assert first.outcome.executed and first.seeds_changed and first.stages["r0c1"] == "GERMINATED"
    second = _epoch(grower, 0.6)
    assert second.outcome.executed and not second.seeds_changed and second.stages["r0c1"] == "TRAINING"
    assert script.seen[-1].val_accuracy_history == (0.5, 0.6) and script.seen[-1].epoch == 2
    assert grower.metrics()["esper/live_seeds"] == 1.0
    saved = grower.state_dict()
    again = Grower(model, Scripted([Decision(Op.WAIT)] * 3), max_epochs=5)
    again.load_state_dict(saved)
    assert again.epoch == 2 and again.history == grower.history


def test_an_illegal_decision_is_refused_not_executed() -> None:
    model = attach(resnet(), slots=["layer1"], example_input=images())
    grower = Grower(model, Scripted([Decision(Op.ADVANCE, slot="r0c0")]), max_epochs=3)
    model.eval()
    step = _epoch(grower)
    assert not step.outcome.executed and "not allowed" in step.outcome.reason


def test_bad_arguments_are_named() -> None:
    model = attach(resnet(), slots=["layer1"], example_input=images())
    with pytest.raises(ValueError, match="max_epochs"):
        Grower(model, "heuristic", max_epochs=0)
    with pytest.raises(ValueError, match="controller: unknown 'nope'"):
        Grower(model, "nope", max_epochs=3)
    grower = Grower(model, "static", max_epochs=3)
    with pytest.raises(ValueError, match="val_loss: expected a number, got str"):
        grower.end_epoch(train_loss=1.0, train_accuracy=0.5, val_loss="x", val_accuracy=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Grower state: expected keys"):
        grower.load_state_dict({"epoch": 0})


@pytest.mark.slow
def test_the_documented_loop_example_runs_and_grows() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "5", "--controller", "random", "--samples", "256"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any("GERMINATE" in line for line in lines), done.stdout
    assert lines[-1].startswith("summary val_accuracy=")
