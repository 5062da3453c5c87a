"""End-to-end `esper train`: outputs, replay, resume, rollback, bad configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from esper.cli.main import main
from esper.contracts.actions import Op
from esper.control.decision import Decision
from esper.telemetry import events as ev
from esper.telemetry.replay import read_events
from esper.training.config import TrainConfig
from esper.training.growth_run import GovernorAbort, GrowthRun
from esper.training.summary import summarize
from esper.training.trainer import run_training

FAST = {"max_batches_per_epoch": 4}


def _write_config(tmp_path: Path, values: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    return path


def test_cli_train_writes_every_output_and_events_replay_into_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = _write_config(tmp_path, {**FAST, "controller": "random"})
    code = main(
        ["train", "--epochs", "3", "--seed", "1", "--config", str(config), "--out", str(out), "--no-progress"]
    )
    assert code == 0
    for name in ("events.jsonl", "summary.json", "checkpoint.pt", "report.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "test_accuracy",
        "val_accuracy",
        "host_params",
        "seed_params",
        "total_params",
        "seeds",
        "epochs",
        "wall_seconds",
    ):
        assert key in summary
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and 0.0 <= summary["val_accuracy"] <= 1.0
    assert summary["epochs"] == 3
    assert summary["total_params"] == summary["host_params"] + summary["seed_params"]
    for seed in summary["seeds"]:
        assert {"slot", "blueprint", "outcome", "stages"} <= set(seed)
    for line in (out / "events.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert {"type", "epoch", "time"} <= set(record)
    replayed = summarize(read_events(out / "events.jsonl"))
    assert json.loads(json.dumps(replayed)) == summary


def _final_state(out: Path) -> dict[str, torch.Tensor]:
    from esper.training.run_io import load_run

    return load_run(out / "checkpoint.pt").model.state_dict()


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    config = TrainConfig(task="mnist1d", controller="random", epochs=6, seed=3, **FAST)
    straight = run_training(config, out_dir=tmp_path / "straight")
    half = run_training(config, out_dir=tmp_path / "halves", stop_after=3)
    assert half["epochs"] == 3
    resumed = run_training(
        config, out_dir=tmp_path / "halves", resume=tmp_path / "halves" / "checkpoint.pt"
    )
    for key in ("test_accuracy", "val_accuracy", "total_params", "epochs", "seeds"):
        assert resumed[key] == straight[key], key
    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "halves")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_nan_mid_run_triggers_rollback_and_training_continues() -> None:
    seen: list[ev.TelemetryEvent] = []
    run = GrowthRun(TrainConfig(task="mnist1d", epochs=6, **FAST), emit=seen.append)
    run.train_epoch()
    with torch.no_grad():
        next(run.model.host.parameters()).fill_(float("nan"))
    signals = run.train_epoch()
    rollbacks = [e for e in seen if isinstance(e, ev.GovernorAction) and e.action == "rollback"]
    assert len(rollbacks) == 1 and "non-finite" in rollbacks[0].reason
    assert math.isnan(signals.train_loss)
    after = run.train_epoch()
    assert math.isfinite(after.train_loss) and math.isfinite(after.val_loss)
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_too_many_rollbacks_abort_with_a_clear_message() -> None:
    run = GrowthRun(TrainConfig(task="mnist1d", epochs=4, governor={"max_rollbacks": 0}, **FAST))
    run.train_epoch()
    with torch.no_grad():
        next(run.model.host.parameters()).fill_(float("inf"))
    with pytest.raises(GovernorAbort, match="rollbacks"):
        run.train_epoch()


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"epochz": 3}, "epochz"),
        ({"epochs": "three"}, "epochs"),
        ({"governor": {"snapshot_every": "x"}}, "governor.snapshot_every"),
    ],
)
def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], values: dict, key: str
) -> None:
    config = _write_config(tmp_path, values)
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert key in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "many"])
    assert exit_info.value.code == 2
    assert main(["train", "--task", "no-such-task", "--no-progress"]) == 2
    assert "no-such-task" in capsys.readouterr().err


class _InterruptAt:
    """A telemetry backend that presses Ctrl-C when an epoch ends."""

    name = "interrupt"

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def write(self, event: ev.TelemetryEvent) -> None:
        if isinstance(event, ev.EpochMetrics) and event.epoch == self.epoch:
            raise KeyboardInterrupt

    def close(self) -> None:
        return None


def test_ctrl_c_leaves_a_resumable_checkpoint(tmp_path: Path) -> None:
    config = TrainConfig(task="mnist1d", controller="random", epochs=4, seed=5, **FAST)
    with pytest.raises(KeyboardInterrupt):
        run_training(config, out_dir=tmp_path / "run", extra_backends=[_InterruptAt(3)])
    summary = run_training(
        config, out_dir=tmp_path / "run", resume=tmp_path / "run" / "checkpoint.pt"
    )
    assert summary["epochs"] == 4


class _Listening:
    """A WAIT-only controller that reads telemetry, like the learned policy does."""

    name = "listening"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def decide(self, signals: object, model: object) -> Decision:
        return Decision(Op.WAIT)

    def observe(self, event: object) -> None:
        assert isinstance(event, ev.TelemetryEvent)
        self.seen.append(event.type)

    def state_dict(self) -> dict[str, object]:
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        assert state == {}


def test_a_controller_that_observes_telemetry_sees_every_event_of_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = _Listening()
    monkeypatch.setattr(GrowthRun, "make_controller", lambda run: controller)
    config = TrainConfig(task="mnist1d", epochs=2, seed=0, **FAST)  # type: ignore[arg-type]
    run_training(config, out_dir=tmp_path)
    written = [event.type for event in read_events(tmp_path / "events.jsonl")]
    assert controller.seen and controller.seen == written[: len(controller.seen)]
    assert "epoch_metrics" in controller.seen
