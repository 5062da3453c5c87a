"""The test seam that holds a process at a write point (used by the interrupt tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from esper import pause_points
from esper.pause_points import MARKER_VARIABLE, PAUSE_AT_VARIABLE, pause_point


@pytest.fixture(autouse=True)
def _fresh_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pause_points, "_reached", pause_points.Counter())


def test_without_the_variable_a_point_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PAUSE_AT_VARIABLE, raising=False)
    pause_point("epoch-events")
    assert pause_points._reached == {}


def test_the_nth_occurrence_writes_the_marker_and_waits_for_a_signal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    marker = tmp_path / "paused"
    monkeypatch.setenv(PAUSE_AT_VARIABLE, "checkpoint.pt:before-rename:2")
    monkeypatch.setenv(MARKER_VARIABLE, str(marker))

    def signal_arrives(seconds: float) -> None:
        raise KeyboardInterrupt  # what SIGINT does to a sleeping process

    monkeypatch.setattr(pause_points.time, "sleep", signal_arrives)
    pause_point("checkpoint.pt:before-rename")
    pause_point("summary.json:before-rename")
    assert not marker.exists()
    with pytest.raises(KeyboardInterrupt):
        pause_point("checkpoint.pt:before-rename")
    assert marker.read_text() == "checkpoint.pt:before-rename:2\n"


@pytest.mark.parametrize("spec", ["epoch-events", "epoch-events:0", "epoch-events:x", ":3"])
def test_a_malformed_spec_is_an_error(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.setenv(PAUSE_AT_VARIABLE, spec)
    with pytest.raises(ValueError, match=PAUSE_AT_VARIABLE):
        pause_point("epoch-events")
