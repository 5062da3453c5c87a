"""Honest resume: only --epochs may change (to extend the run), and a run continues in its own directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.cli.conftest import one_line, snapshot

from esper.cli.main import main
from esper.training.config import TrainConfig
from esper.training.preflight import RunInputError
from esper.training.run_io import load_run
from esper.training.trainer import run_training


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_each_contradicting_flag_is_named_and_nothing_changes(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(finished_run)
    code = main([
        "train", "--resume", str(finished_run / "checkpoint.pt"), "--seed", "3", "--controller", "random",
        "--task", "mnist1d-blind", "--epochs", "4", "--no-progress",
    ])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert "--seed 3 contradicts the saved run's seed 0" in line
    assert "--controller random contradicts the saved run's controller heuristic" in line
    assert "--task mnist1d-blind contradicts the saved run's task mnist1d" in line
    assert "epochs" not in line.split("(")[0]  # --epochs is not a contradiction: it extends the run
    assert snapshot(finished_run) == before


def test_a_config_file_value_that_contradicts_the_run_is_named_with_its_file(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "other.toml"
    config.write_text("max_batches_per_epoch = 2\n[governor]\nmax_rollbacks = 1\n", encoding="utf-8")
    before = snapshot(finished_run)
    code = main(["train", "--resume", str(finished_run / "checkpoint.pt"), "--config", str(config), "--no-progress"])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert f"{config}: governor.max_rollbacks 1 contradicts the saved run's governor.max_rollbacks 3" in line
    assert "max_batches_per_epoch" not in line  # equal to the saved value: accepted
    assert snapshot(finished_run) == before


def test_extending_a_finished_run_with_the_same_flags_trains_the_new_epochs_only(
    finished_run: Path, tiny_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([
        "train", "--resume", str(finished_run / "checkpoint.pt"), "--epochs", "3", "--seed", "0",
        "--task", "mnist1d", "--config", str(tiny_config), "--no-progress",
    ])
    assert code == 0, capsys.readouterr().err
    epochs = [e["epoch"] for e in _events(finished_run) if e["type"] == "epoch_metrics"]
    assert epochs == [1, 2, 3]
    assert json.loads((finished_run / "summary.json").read_text())["epochs"] == 3
    assert load_run(finished_run / "checkpoint.pt").config["epochs"] == 3


def test_a_finished_run_resumed_without_more_epochs_has_nothing_to_do(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(finished_run)
    assert main(["train", "--resume", str(finished_run / "checkpoint.pt"), "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(finished_run) == before


def test_fewer_epochs_than_already_trained_is_refused(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(finished_run)
    assert main(["train", "--resume", str(finished_run / "checkpoint.pt"), "--epochs", "1", "--no-progress"]) == 2
    assert "already trained 2 epochs" in one_line(capsys.readouterr().err)
    assert snapshot(finished_run) == before


@pytest.mark.parametrize("target", ["missing", "empty", "other-run"])
def test_resuming_into_another_directory_is_refused_before_anything_changes(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    out = tmp_path / target
    if target == "empty":
        out.mkdir()
    elif target == "other-run":
        shutil.copytree(finished_run, out)
    before, before_out = snapshot(finished_run), (snapshot(out) if out.exists() else None)
    code = main([
        "train", "--resume", str(finished_run / "checkpoint.pt"), "--epochs", "4", "--out", str(out), "--no-progress",
    ])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert "continues in its own directory" in line and "cp -r" in line
    assert snapshot(finished_run) == before
    assert (snapshot(out) if out.exists() else None) == before_out


def test_resume_with_out_naming_the_runs_own_directory_is_accepted(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([
        "train", "--resume", str(finished_run / "checkpoint.pt"), "--epochs", "3",
        "--out", f"{finished_run}/.", "--no-progress",
    ])
    assert code == 0, capsys.readouterr().err


def test_a_checkpoint_without_its_events_is_refused_before_training(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(finished_run / "checkpoint.pt", alone / "checkpoint.pt")
    code = main(["train", "--resume", str(alone / "checkpoint.pt"), "--epochs", "3", "--no-progress"])
    assert code == 2
    assert "holds no events.jsonl" in one_line(capsys.readouterr().err)
    assert [p.name for p in alone.iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (lambda run: ["--resume", str(run)], "is a directory"),
        (lambda run: ["--resume", str(run / "nope.pt")], "no such file"),
        (lambda run: ["--resume", str(run / "summary.json")], "resumes from its own checkpoint.pt"),
        (lambda run: ["--resume", str(run / "checkpoint.pt"), "--overwrite"], "--overwrite is for a fresh run"),
    ],
    ids=["directory", "missing", "not-checkpoint", "overwrite"],
)
def test_bad_resume_paths_are_one_line(
    finished_run: Path, capsys: pytest.CaptureFixture[str], argv, message: str
) -> None:
    before = snapshot(finished_run)
    assert main(["train", *argv(finished_run), "--epochs", "3", "--no-progress"]) == 2
    assert message in one_line(capsys.readouterr().err)
    assert snapshot(finished_run) == before


def test_run_training_refuses_a_config_that_contradicts_the_saved_run(finished_run: Path) -> None:
    config = TrainConfig(seed=5, epochs=3, max_batches_per_epoch=2)
    with pytest.raises(RunInputError, match="seed 5 contradicts the saved run's seed 0"):
        run_training(config, out_dir=finished_run, resume=finished_run / "checkpoint.pt")
