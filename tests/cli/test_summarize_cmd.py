"""`esper summarize RUN_DIR` rebuilds summary.json from events.jsonl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.cli.conftest import one_line

from esper.cli.main import main


def test_a_deleted_summary_is_rebuilt_exactly(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = (finished_run / "summary.json").read_bytes()
    (finished_run / "summary.json").unlink()
    assert main(["summarize", str(finished_run)]) == 0
    assert str(finished_run / "summary.json") in capsys.readouterr().out
    assert json.loads((finished_run / "summary.json").read_bytes()) == json.loads(original)
    assert (finished_run / "summary.json").read_bytes() == original
    assert sorted(p.name for p in finished_run.iterdir()) == [
        "checkpoint.pt", "events.jsonl", "report.png", "summary.json",
    ]  # the atomic write leaves no temporary file


def _events_as(text: str | None):
    def prepare(run: Path) -> Path:
        if text is None:
            (run / "events.jsonl").unlink()
        else:
            (run / "events.jsonl").write_text(text, encoding="utf-8")
        return run

    return prepare


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda run: run / "nowhere", "no such directory"),
        (lambda run: run / "summary.json", "is a file"),
        (_events_as(None), "holds no events.jsonl"),
        (_events_as("{not json\n"), "events.jsonl:1"),
        (_events_as(""), "no complete epoch"),
    ],
    ids=["no-dir", "a-file", "no-events", "malformed", "empty"],
)
def test_bad_run_directories_are_one_line_and_keep_the_summary(
    finished_run: Path, capsys: pytest.CaptureFixture[str], prepare, message: str
) -> None:
    summary = (finished_run / "summary.json").read_bytes()
    target = prepare(finished_run)
    assert main(["summarize", str(target)]) == 2
    assert message in one_line(capsys.readouterr().err)
    assert (finished_run / "summary.json").read_bytes() == summary


@pytest.mark.slow
def test_summarize_as_a_command(finished_run: Path) -> None:
    (finished_run / "events.jsonl").write_text('{"type": "nope"}\n')
    done = subprocess.run(
        [sys.executable, "-m", "esper", "summarize", str(finished_run)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert one_line(done.stderr).startswith("esper summarize: ")
