"""An epoch is recorded all or nothing: real `esper train` processes interrupted at each write point.

Each test starts `python -m esper train` in a subprocess, holds it at one write
point through the test seam in `esper.pause_points`, sends a real SIGINT or
SIGKILL, checks that events, checkpoint and summary agree on disk, resumes the
run to its end with `esper train --resume`, and compares the final events.jsonl
and summary.json with those of an uninterrupted run (wall-clock fields aside).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from esper.cli.main import main
from esper.pause_points import MARKER_VARIABLE, PAUSE_AT_VARIABLE
from esper.telemetry.replay import read_events
from esper.training.run_io import load_run
from esper.training.summary import summarize

pytestmark = pytest.mark.slow

EPOCHS = "4"
# The random controller germinates two seeds in these 4 epochs, so a duplicated epoch would show
# up as a phantom seed in the summary.
CONFIG = 'controller = "random"\nseed = 0\nmax_batches_per_epoch = 2\n'
SUBPROCESS_TIMEOUT = 120.0
# Write points and the occurrence to stop at. Checkpoint 1 is epoch 0's, so checkpoint 3 is epoch 2's.
POINTS = [
    "epoch-events:2",
    "checkpoint.pt:before-rename:3",
    "checkpoint.pt:after-rename:3",
    "summary.json:before-rename:1",
    "report.png:before-rename:1",
]
WALL_CLOCK_KEYS = {"time", "wall_seconds"}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"bare {name} is not JSON")


def _strict_load(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def _without_wall_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_wall_clock(v) for k, v in value.items() if k not in WALL_CLOCK_KEYS}
    if isinstance(value, list):
        return [_without_wall_clock(item) for item in value]
    return value


def _events(out: Path) -> list[Any]:
    return [_without_wall_clock(_strict_load(line)) for line in (out / "events.jsonl").read_text().splitlines()]


def _summary(out: Path) -> Any:
    return _without_wall_clock(_strict_load((out / "summary.json").read_text()))


def _command(config: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "esper", "train", "--epochs", EPOCHS,
        "--config", str(config), "--out", str(out), "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, config_file: Path) -> tuple[list[Any], Any]:
    """Events and summary of the same run, uninterrupted."""
    out = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run(
        _command(config_file, out), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr
    summary = _summary(out)
    assert len(summary["seeds"]) == 2, "the reference run should grow seeds"
    return _events(out), summary


def _run_until_paused(command: list[str], point: str, marker: Path) -> subprocess.Popen[str]:
    env = {**os.environ, PAUSE_AT_VARIABLE: point, MARKER_VARIABLE: str(marker)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while not marker.exists():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the run ended (exit {process.returncode}) before reaching {point}: {err}")
        if time.monotonic() > deadline:
            process.kill()
            process.communicate()
            pytest.fail(f"the run did not reach {point} within {SUBPROCESS_TIMEOUT:.0f}s")
        time.sleep(0.02)
    return process


def _assert_directory_agrees(out: Path, reference_events: list[Any]) -> None:
    """What an interruption left: the checkpoint commits a prefix of the uninterrupted history."""
    saved = load_run(out / "checkpoint.pt")
    assert saved.events is not None
    data = (out / "events.jsonl").read_bytes()
    assert len(data) >= saved.events.bytes
    prefix = data[: saved.events.bytes]
    assert hashlib.sha256(prefix).hexdigest() == saved.events.sha256
    committed = [_without_wall_clock(_strict_load(line)) for line in prefix.decode().splitlines()]
    assert len(committed) == saved.events.lines
    assert committed == reference_events[: len(committed)]
    epochs_committed = sum(1 for event in committed if event["type"] == "epoch_metrics")
    assert epochs_committed == saved.run_state["epoch"]
    if (out / "summary.json").exists():
        # A summary on disk describes exactly the events beside it.
        on_disk = _strict_load((out / "summary.json").read_text())
        rebuilt = summarize(read_events(out / "events.jsonl"))
        assert _without_wall_clock(on_disk) == _without_wall_clock(json.loads(json.dumps(rebuilt)))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("point", POINTS)
def test_interrupt_at_each_write_point_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path,
    config_file: Path,
    reference: tuple[list[Any], Any],
    point: str,
    sig: signal.Signals,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reference_events, reference_summary = reference
    out = tmp_path / "run"
    process = _run_until_paused(_command(config_file, out), point, tmp_path / "paused")
    process.send_signal(sig)
    _, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    if sig == signal.SIGINT:
        assert process.returncode == 130, err
        assert f"interrupted: resume with  esper train --resume {out / 'checkpoint.pt'}" in err
        assert "Traceback" not in err
    else:
        assert process.returncode == -signal.SIGKILL

    _assert_directory_agrees(out, reference_events)

    assert main(["train", "--resume", str(out / "checkpoint.pt"), "--no-progress"]) == 0, capsys.readouterr().err
    assert _events(out) == reference_events
    assert _summary(out) == reference_summary
    assert (out / "report.png").is_file()
    assert sorted(path.name for path in out.iterdir()) == [
        "checkpoint.pt", "events.jsonl", "report.png", "summary.json",
    ]  # fmt: skip
