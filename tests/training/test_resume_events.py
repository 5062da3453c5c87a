"""Resume cuts events.jsonl back to what the checkpoint committed, and refuses a history that is not the run's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from esper.checkpoints.atomic import atomic_torch_save
from esper.cli.main import main
from esper.telemetry import events as ev
from esper.training.config import TrainConfig
from esper.training.run_io import load_run
from esper.training.trainer import run_training

CONFIG = TrainConfig(task="mnist1d", controller="random", epochs=3, seed=0, max_batches_per_epoch=2)


def _comparable(out: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("time")
        if record["type"] == "run_finished":
            record["summary"].pop("wall_seconds")
    return records


class _CtrlCAt:
    """A telemetry backend that presses Ctrl-C when it sees the first event of `event_type` at `epoch`."""

    name = "ctrl-c"

    def __init__(self, event_type: type[ev.TelemetryEvent], epoch: int) -> None:
        self.event_type, self.epoch = event_type, epoch

    def write(self, event: ev.TelemetryEvent) -> None:
        if isinstance(event, self.event_type) and event.epoch == self.epoch:
            raise KeyboardInterrupt

    def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    run_training(CONFIG, out_dir=out)
    return out


def test_a_run_interrupted_in_its_first_epoch_resumes_from_its_epoch_0_checkpoint(
    tmp_path: Path, straight: Path
) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_training(CONFIG, out_dir=tmp_path, extra_backends=[_CtrlCAt(ev.EpochMetrics, 1)])
    saved = load_run(tmp_path / "checkpoint.pt")
    assert saved.run_state["epoch"] == 0
    assert saved.events is not None and saved.events.lines == 1  # run_started
    run_training(CONFIG, out_dir=tmp_path, resume=tmp_path / "checkpoint.pt")
    assert _comparable(tmp_path) == _comparable(straight)


def test_events_written_after_the_last_checkpoint_are_replayed_not_duplicated(
    tmp_path: Path, straight: Path
) -> None:
    # Ctrl-C at epoch 2's decision: epoch 2's metrics are on disk, its checkpoint is not.
    with pytest.raises(KeyboardInterrupt):
        run_training(
            CONFIG, out_dir=tmp_path, extra_backends=[_CtrlCAt(ev.ControllerDecision, 2)]
        )
    written = [json.loads(line)["type"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert written.count("epoch_metrics") == 2
    assert load_run(tmp_path / "checkpoint.pt").run_state["epoch"] == 1
    summary = run_training(CONFIG, out_dir=tmp_path, resume=tmp_path / "checkpoint.pt")
    assert _comparable(tmp_path) == _comparable(straight)
    expected = json.loads((straight / "summary.json").read_text())
    assert summary["seeds"] == expected["seeds"]


def _stopped_run(out: Path) -> Path:
    run_training(CONFIG, out_dir=out, stop_after=2)
    return out / "checkpoint.pt"


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (lambda data: data[: len(data) // 2], "holds"),
        (lambda data: data.replace(b'"epoch":1', b'"epoch":7', 1), "differ from the events the checkpoint committed"),
    ],
    ids=["shorter", "altered"],
)
def test_resume_refuses_events_that_are_not_the_checkpoints_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: Any, problem: str
) -> None:
    checkpoint = _stopped_run(tmp_path)
    events = tmp_path / "events.jsonl"
    events.write_bytes(tamper(events.read_bytes()))
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert main(["train", "--resume", str(checkpoint), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(events) in err.replace("\n", "") and problem in err.replace("\n", "")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before  # nothing changed


def test_a_checkpoint_from_before_the_commit_record_is_refused_for_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _stopped_run(tmp_path)
    data = torch.load(checkpoint, weights_only=True)
    del data["events"]
    del data["run"]["rng"]["cuda"]  # added in version 3
    data["schema_version"] = 1
    atomic_torch_save(data, checkpoint)
    assert load_run(checkpoint).events is None  # still loads (export, audit)
    assert main(["train", "--resume", str(checkpoint), "--no-progress"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "events: not recorded" in err and "cannot be resumed exactly" in err
