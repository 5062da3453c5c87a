"""The live display: plain lines without a terminal, a live panel on one, silence when disabled."""

from __future__ import annotations

import math
import re
from io import StringIO

import pytest
from rich.console import Console

from esper.telemetry import events as ev
from esper.telemetry.hub import Backend, TelemetryHub
from esper.ui.progress import TrainingProgress

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _metrics(epoch: int, train_accuracy: float = 0.8, train_loss: float = 0.5) -> ev.EpochMetrics:
    return ev.EpochMetrics(
        epoch=epoch,
        train_loss=train_loss,
        train_accuracy=train_accuracy,
        val_loss=0.6,
        val_accuracy=0.75,
        host_params=1000,
        seed_params=200,
        total_params=1200,
        slots={
            "r0c0": ev.SlotSnapshot(
                stage="BLENDING", blueprint="conv_light", alpha=0.4, contribution=1.5, epochs_in_stage=2
            ),
            "r0c1": ev.SlotSnapshot(stage="DORMANT", blueprint=None, alpha=0.0, contribution=None, epochs_in_stage=0),
        },
    )


def _started() -> ev.RunStarted:
    return ev.RunStarted(epoch=-1, task="mnist1d", controller="heuristic", seed=3, config={}, plan={}, versions={},
                         slots=["r0c0", "r0c1"], host_params=1000)


def _stage_change() -> ev.SeedStageChanged:
    return ev.SeedStageChanged(epoch=1, slot="r0c0", blueprint="conv_light", from_stage="TRAINING",
                               to_stage="BLENDING", reason="gate G2 passed [permissive]", alpha=0.0,
                               seed_params=200)


def _plain_console(buffer: StringIO) -> Console:
    return Console(file=buffer, force_terminal=False, width=300)


def test_plain_output_without_a_terminal_is_one_line_per_epoch() -> None:
    buffer = StringIO()
    with TrainingProgress(total_epochs=3, title="t", console=_plain_console(buffer)) as progress:
        assert not progress.live_mode
        progress.write(_started())
        progress.write(_metrics(1))
        progress.write(_stage_change())
        progress.write(_metrics(2))
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0] == "t  task mnist1d · controller heuristic · seed 3 · 2 slots · host 1,000 params"
    assert lines[1].startswith("epoch 1/3 · train loss 0.5000 acc 80.00% · val loss 0.6000 acc 75.00% · ")
    assert "params 1,200 (host 1,000 + seeds 200) · r0c0 conv_light BLENDING α=0.40" in lines[1]
    assert "r0c1" not in lines[1]  # dormant slots are left out of the one-liner
    # The reason's brackets print as written: lines are never parsed as markup.
    assert lines[2] == "epoch 1 · r0c0 conv_light: TRAINING → BLENDING  (gate G2 passed [permissive])"
    assert lines[3].startswith("epoch 2/3 ")
    assert "\x1b[" not in buffer.getvalue()  # no escape codes in logs


def test_governor_rollback_and_run_end_are_noted_and_nan_shows_as_na() -> None:
    buffer = StringIO()
    with TrainingProgress(total_epochs=5, title="t", console=_plain_console(buffer)) as progress:
        progress.write(ev.GovernorAction(epoch=4, action="snapshot", reason="every 5", rollbacks=0))
        progress.write(ev.GovernorAction(epoch=4, action="rollback", reason="loss is NaN", rollbacks=1,
                                         pruned_slots=["r0c0"]))
        progress.write(_metrics(4, train_accuracy=math.nan, train_loss=math.nan))
        progress.write(ev.RunFinished(epoch=5, summary={"test_accuracy": 0.9312}, reason="completed"))
        progress.write(ev.GateEvaluated(epoch=4, slot="r0c0", gate="G2", target_stage="BLENDING", passed=False,
                                        score=0.1, checks_passed=[], checks_failed=["epochs"], message="m"))
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "epoch 4 · governor rollback (rollbacks 1): loss is NaN; pruned r0c0"
    assert lines[1].startswith("epoch 4/5 · train loss n/a acc n/a · val loss 0.6000 acc 75.00%")
    assert lines[2] == "run finished after epoch 5: completed · test accuracy 93.12%"
    assert len(lines) == 3  # snapshots and gate evaluations are not shown


def test_live_panel_lists_slots_with_stage_blueprint_alpha_and_contribution() -> None:
    buffer = StringIO()
    console = Console(file=buffer, force_terminal=True, width=160)
    with TrainingProgress(total_epochs=3, title="esper train mnist1d", console=console) as progress:
        assert progress.live_mode
        progress.write(_started())
        progress.write(_metrics(2))
        progress.note("a note [with brackets]")
    text = _ANSI.sub("", buffer.getvalue())
    for needle in ("esper train mnist1d", "controller heuristic", "seed 3", "2/3", "75.00%", "total 1,200",
                   "host 1,000 · seeds 200", "r0c0", "BLENDING", "conv_light", "0.40", "+1.50 pt", "r0c1",
                   "DORMANT", "a note [with brackets]"):
        assert needle in text, needle
    # The final frame stays on screen, after the note printed above it.
    assert text.rindex("conv_light") > text.index("a note")


def test_disabled_display_prints_nothing_even_on_a_terminal() -> None:
    buffer = StringIO()
    console = Console(file=buffer, force_terminal=True)
    with TrainingProgress(total_epochs=3, title="t", console=console, enabled=False) as progress:
        assert not progress.live_mode
        progress.write(_started())
        progress.write(_metrics(1))
        progress.write(_stage_change())
        progress.note("hello")
    assert buffer.getvalue() == ""


def test_works_as_a_hub_backend_and_close_is_idempotent() -> None:
    buffer = StringIO()
    progress = TrainingProgress(total_epochs=2, title="t", console=_plain_console(buffer))
    assert isinstance(progress, Backend)
    with progress, TelemetryHub([progress], run_id="run-1") as hub:
        hub.emit(_metrics(1))
        hub.emit(_metrics(2))
    assert hub.failures == []
    assert buffer.getvalue().count("epoch ") == 2
    progress.close()
    with pytest.raises(RuntimeError, match="already closed"):
        progress.start()


def test_epochs_beyond_the_announced_total_extend_it() -> None:
    buffer = StringIO()
    with TrainingProgress(total_epochs=2, title="t", console=_plain_console(buffer)) as progress:
        progress.write(_metrics(5))
    assert progress.total_epochs == 5
    assert buffer.getvalue().startswith("epoch 5/5 ")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"total_epochs": 0}, ValueError, r"total_epochs: expected an int >= 1, got 0"),
        ({"total_epochs": True}, ValueError, r"total_epochs: expected an int >= 1, got True"),
        ({"title": 3}, TypeError, r"title: expected a str, got int"),
        ({"console": "stdout"}, TypeError, r"console: expected a rich Console or None, got str"),
        ({"enabled": 1}, TypeError, r"enabled: expected a bool, got int"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    arguments: dict[str, object] = {"total_epochs": 3, "title": "t", **kwargs}
    with pytest.raises(error, match=message):
        TrainingProgress(**arguments)  # type: ignore[arg-type]


def test_wrong_inputs_to_write_update_and_note_are_refused() -> None:
    progress = TrainingProgress(total_epochs=3, title="t", console=_plain_console(StringIO()))
    with pytest.raises(TypeError, match="write: expected a TelemetryEvent, got dict"):
        progress.write({"type": "epoch_metrics"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="update: expected an EpochMetrics event, got RunStarted"):
        progress.update(_started())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="note: expected a str or rich Text, got int"):
        progress.note(3)  # type: ignore[arg-type]
