"""The live display degrades to plain lines without a terminal and shows every slot."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from esper.telemetry import events as ev
from esper.ui.progress import TrainingProgress


def _metrics(epoch: int) -> ev.EpochMetrics:
    return ev.EpochMetrics(
        epoch=epoch,
        train_loss=0.5,
        train_accuracy=0.8,
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


def test_plain_output_without_a_terminal() -> None:
    buffer = StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with TrainingProgress(total_epochs=3, title="t", console=console) as progress:
        assert not progress.live_mode
        progress.write(_metrics(1))
        progress.write(
            ev.SeedStageChanged(
                epoch=1,
                slot="r0c0",
                blueprint="conv_light",
                from_stage="TRAINING",
                to_stage="BLENDING",
                reason="gate G2 passed",
                alpha=0.0,
                seed_params=200,
            )
        )
    text = buffer.getvalue()
    assert "epoch 1/3" in text and "75.00%" in text and "r0c0:BLEN" in text
    assert "r0c0: TRAINING → BLENDING" in text


def test_live_table_lists_slots_with_stage_blueprint_and_contribution() -> None:
    buffer = StringIO()
    console = Console(file=buffer, force_terminal=True, width=200)
    with TrainingProgress(total_epochs=3, title="grow", console=console) as progress:
        assert progress.live_mode
        progress.write(_metrics(2))
        console.print(progress._renderable())
    text = buffer.getvalue()
    for needle in ("grow", "r0c0", "BLENDING", "conv_light", "+1.50 pt", "r0c1", "DORMANT"):
        assert needle in text


def test_disabled_display_prints_nothing() -> None:
    buffer = StringIO()
    console = Console(file=buffer, force_terminal=False)
    with TrainingProgress(total_epochs=3, title="t", console=console, enabled=False) as progress:
        progress.write(_metrics(1))
    assert buffer.getvalue() == ""
