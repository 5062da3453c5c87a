"""`esper watch` and `--watch` on esper train / esper ppo, as a user types them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from esper.cli import main as cli_main
from esper.ui.watch import launch
from esper.ui.watch.app import WatchApp

from .watch_helpers import HEURISTIC_FAST, PPO_ARGS, PPO_CONFIG_TOML, drive, screen_text, wait_until


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def train_config(tmp_path: Path) -> Path:
    path = tmp_path / "train.toml"
    fast = "\n".join(f"{key} = {value}" for key, value in HEURISTIC_FAST.items())
    path.write_text(f"max_batches_per_epoch = 5\n[heuristic]\n{fast}\n", encoding="utf-8")
    return path


@pytest.fixture
def as_in_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "interactive", lambda: True)


def use_driver(monkeypatch: pytest.MonkeyPatch, script: Any) -> list[WatchApp]:
    """Replace the full-screen run with the headless pilot running `script`; returns the apps run."""
    apps: list[WatchApp] = []

    def run_app(app: WatchApp) -> None:
        apps.append(app)
        drive(app, script, size=(100, 30))

    monkeypatch.setattr(launch, "run_app", run_app)
    return apps


def test_without_textual_watch_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(launch, "textual_available", lambda: False)
    assert cli_main.main(["watch", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("esper watch:") and "pip install 'esper[ui]'" in line
    out = tmp_path / "run"
    assert cli_main.main(["train", "--task", "mnist1d", "--epochs", "1", "--out", str(out), "--watch"]) == 2
    assert "esper train --watch:" in one_error_line(capsys) and not out.exists()  # nothing started
    code = cli_main.main(["ppo", *PPO_ARGS, "--out", str(out), "--watch"])
    assert code == 2 and "esper ppo --watch:" in one_error_line(capsys) and not out.exists()


def test_the_real_module_check_finds_textual() -> None:
    assert launch.textual_available()  # textual is in the dev extra the tests run with


def test_a_file_or_a_path_under_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x", encoding="utf-8")
    assert cli_main.main(["watch", str(a_file)]) == 2
    assert "is a file, not a run directory" in one_error_line(capsys)
    assert cli_main.main(["watch", str(a_file / "run")]) == 2
    assert f"{a_file} is a file, so no run directory can be created there" in one_error_line(capsys)
    assert cli_main.main(["watch", str(tmp_path), "--poll", "0"]) == 2
    assert "--poll: expected a positive number" in one_error_line(capsys)


def test_without_a_terminal_it_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # pytest's stdin is not a terminal: a full-screen app cannot start.
    assert cli_main.main(["watch", str(tmp_path)]) == 2
    assert "needs an interactive terminal" in one_error_line(capsys)


def test_watch_waits_for_a_run_directory_that_does_not_exist_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_in_a_terminal: None
) -> None:
    run_dir = tmp_path / "runs" / "later"

    async def script(app: WatchApp, pilot: Any) -> None:
        await pilot.pause()
        notice = str(app.query_one("#notice", Static).content)
        assert notice == f"run directory {run_dir} does not exist yet: waiting for a run to start there"
        assert "does not exist yet: waiting" in " ".join(screen_text(app).split())  # drawn, perhaps wrapped
        await pilot.press("q")

    apps = use_driver(monkeypatch, script)
    assert cli_main.main(["watch", str(run_dir), "--poll", "0.05"]) == 0
    assert apps[0].run_dir == run_dir and apps[0].poll_seconds == 0.05


def test_child_argv_drops_watch_and_its_abbreviations(tmp_path: Path) -> None:
    argv = ["train", "--wat", "--epochs", "3", "--watch", "--task", "mnist1d"]
    assert launch.child_argv(argv, tmp_path) == [
        "train", "--epochs", "3", "--task", "mnist1d", "--no-progress", "--out", str(tmp_path)
    ]


@pytest.mark.slow
def test_train_watch_runs_the_training_under_the_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], as_in_a_terminal: None
) -> None:
    out = tmp_path / "run"

    async def script(app: WatchApp, pilot: Any) -> None:
        assert app.process is not None
        await wait_until(pilot, lambda: app.process.poll() is not None, timeout=120, what="the training child")
        await wait_until(pilot, lambda: app.state.finished_reason is not None, what="the run's last event")
        await wait_until(pilot, lambda: "training exited with status 0" in screen_text(app), what="the exit status")
        text = screen_text(app)
        assert "epoch 14" in text and "FOSSILIZED" in text
        await pilot.press("q")

    apps = use_driver(monkeypatch, script)
    code = cli_main.main(["train", "--task", "mnist1d", "--epochs", "14", "--config", str(train_config(tmp_path)),
                          "--out", str(out), "--watch"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "test accuracy" in captured.out and f"outputs in {out}/" in captured.out  # the child's output, replayed
    assert (out / "summary.json").is_file() and apps[0].state.test_accuracy is not None


@pytest.mark.slow
def test_quitting_the_dashboard_interrupts_the_training_resumably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], as_in_a_terminal: None
) -> None:
    out = tmp_path / "run"

    async def script(app: WatchApp, pilot: Any) -> None:
        await wait_until(pilot, lambda: app.state.epoch >= 2, timeout=120, what="two epochs")
        assert app.process is not None and app.process.poll() is None
        await pilot.press("q")

    use_driver(monkeypatch, script)
    code = cli_main.main(["train", "--task", "mnist1d", "--epochs", "2000", "--config", str(train_config(tmp_path)),
                          "--out", str(out), "--watch"])
    captured = capsys.readouterr()
    assert code == 130, captured.err
    assert f"resume with esper train --resume {out / 'checkpoint.pt'}" in " ".join(captured.err.split())
    assert (out / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_ppo_watch_fills_the_ppo_panels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], as_in_a_terminal: None
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(PPO_CONFIG_TOML, encoding="utf-8")
    out = tmp_path / "ppo"

    async def script(app: WatchApp, pilot: Any) -> None:
        await wait_until(pilot, lambda: len(app.state.rounds) == 2, timeout=180, what="two PPO rounds")
        await wait_until(pilot, lambda: app.process is not None and app.process.poll() is not None, timeout=60)
        await pilot.pause()
        text = screen_text(app)
        assert " PPO " in text and "round 2" in text and "policy health" in text and "expl var" in text
        assert sorted(app.state.envs) == [0, 1]
        await pilot.press("q")

    use_driver(monkeypatch, script)
    code = cli_main.main(["ppo", *PPO_ARGS, "--config", str(config), "--out", str(out), "--watch"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "2 rounds done" in captured.out and (out / "agent.pt").is_file()
    assert sys.executable  # the child ran with this interpreter (and this PYTHONPATH)
