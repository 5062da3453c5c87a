"""esper watch driven headless by textual's pilot, over real short runs made here."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from esper.cli import main as cli_main
from esper.ui.watch import cost
from esper.ui.watch.app import WatchApp
from esper.ui.watch.render import fmt_pct
from esper.ui.watch.widgets import HelpScreen, ProblemsScreen, SeedHistoryScreen, SlotTable

from .watch_helpers import PPO_ARGS, PPO_CONFIG_TOML, TRAIN_EPOCHS, drive, make_train_run, screen_text, wait_until


@pytest.fixture(scope="module")
def train_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("watch-app-train")
    return out, make_train_run(out)


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("watch-app-ppo")
    (out / "run.toml").write_text(PPO_CONFIG_TOML, encoding="utf-8")
    code = cli_main.main(["ppo", *PPO_ARGS, "--config", str(out / "run.toml"), "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def finished(app: WatchApp) -> bool:
    return app.state.finished_reason is not None


def test_panels_show_the_run_in_80x24(train_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, summary = train_run

    async def script(app: WatchApp, pilot: Any) -> None:
        await wait_until(pilot, lambda: finished(app), what="the run's last event")
        await pilot.pause()
        text = screen_text(app)
        best = max(point.val_accuracy for point in app.state.epochs)
        assert f"mnist1d · heuristic · epoch {TRAIN_EPOCHS}" in text
        assert f"best {fmt_pct(best)}" in text and f"test {fmt_pct(summary['test_accuracy'])}" in text
        assert f"params {summary['total_params']:,}" in text and "rollbacks 0" in text
        assert "finished: completed" in text
        slot_row = next(line for line in text.splitlines() if "r0c0" in line)
        assert "FOSSILIZED" in slot_row and "conv_light" in slot_row and "1.00" in slot_row
        assert "█" * TRAIN_EPOCHS in slot_row  # one lane cell per epoch
        val_row = next(line for line in text.splitlines() if "val acc" in line and "│" in line)
        assert f"{100 * app.state.epochs[-1].val_accuracy:.1f}%" in val_row
        # 80x24: the log starts hidden so the lanes and curves fit; the curves are shown.
        assert not app.query_one("#right").display and app.query_one("#curves").display

    drive(WatchApp(run_dir, poll_seconds=0.05), script, size=(80, 24))


@pytest.mark.slow
def test_keys_help_log_filters_slot_history_and_pause(train_run: tuple[Path, dict[str, Any]]) -> None:
    run_dir, _ = train_run

    async def script(app: WatchApp, pilot: Any) -> None:
        await wait_until(pilot, lambda: finished(app))
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "show only the next event type" in screen_text(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)

        await pilot.press("l")  # the log, in the curves' room on a small terminal
        await pilot.pause()
        assert app.query_one("#right").display and not app.query_one("#curves").display
        assert "run_finished" in screen_text(app)
        await pilot.press("t")  # first type, alphabetically
        await pilot.pause()
        assert app.type_filter == "contribution_measured"
        text = screen_text(app)
        assert "type=contribution_measured" in text and "contribution +16.00 pt" in text
        assert "run_finished" not in text and "epoch_metrics" not in text
        await pilot.press("x", "s")
        await pilot.pause()
        assert (app.type_filter, app.slot_filter) == (None, "r0c0")
        text = screen_text(app)
        assert "slot=r0c0" in text and "G5 → FOSSILIZED passed" in text and "run_finished" not in text
        await pilot.press("s")
        assert app.slot_filter is None
        await pilot.press("l", "c")
        await pilot.pause()
        assert not app.query_one("#right").display and not app.query_one("#curves").display

        await pilot.press("enter")  # the first slot is selected
        assert isinstance(app.screen, SeedHistoryScreen) and app.screen.view.slot == "r0c0"
        text = screen_text(app)
        assert "ended: FOSSILIZED at epoch" in text and "GERMINATED" in text
        await pilot.press("end")  # the history scrolls
        await pilot.pause()
        text = screen_text(app)
        assert "G5 → FOSSILIZED  passed" in text and "✓ contribution measured" in text
        assert "5 measurements" in text and "gradient ratio" in text
        await pilot.press("escape", "down", "enter")
        assert isinstance(app.screen, SeedHistoryScreen) and app.screen.view.slot == "r0c1"
        assert "none evaluated" in screen_text(app)
        await pilot.press("escape")

        await pilot.press("p")
        await pilot.pause()
        assert app.paused and "PAUSED" in screen_text(app)
        await pilot.press("p")
        assert not app.paused

    drive(WatchApp(run_dir, poll_seconds=0.05), script, size=(80, 24))


def test_a_corrupted_line_is_reported_and_skipped(tmp_path: Path, train_run: tuple[Path, dict[str, Any]]) -> None:
    lines = (train_run[0] / "events.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(4, '{"type": "epoch_metrics", "epoch": 3, "train_loss": 0.5, "trai\n')  # cut mid-write
    (tmp_path / "events.jsonl").write_text("".join(lines), encoding="utf-8")

    async def script(app: WatchApp, pilot: Any) -> None:
        await wait_until(pilot, lambda: finished(app))
        await pilot.pause()
        text = screen_text(app)
        assert "1 bad line(s) skipped · latest: line 5: telemetry event: not valid JSON" in text
        assert "finished: completed · 1 bad lines skipped" in text and f"epoch {TRAIN_EPOCHS}" in text
        assert len(app.state.epochs) == TRAIN_EPOCHS
        await pilot.press("w")
        assert isinstance(app.screen, ProblemsScreen) and "line 5: telemetry event" in screen_text(app)

    drive(WatchApp(tmp_path, poll_seconds=0.05), script, size=(100, 30))


def test_a_growing_file_shows_the_new_epochs(tmp_path: Path, train_run: tuple[Path, dict[str, Any]]) -> None:
    lines = (train_run[0] / "events.jsonl").read_bytes().splitlines(keepends=True)
    run_dir = tmp_path / "not-yet" / "run"
    path = run_dir / "events.jsonl"

    def epochs_shown(app: WatchApp) -> int:
        return len(app.state.epochs)

    async def script(app: WatchApp, pilot: Any) -> None:
        await pilot.pause()
        assert "does not exist yet: waiting for a run to start there" in screen_text(app)
        run_dir.mkdir(parents=True)
        await wait_until(pilot, lambda: "no events yet" in screen_text(app), what="the no-events message")
        path.write_bytes(b"".join(lines[:6]))
        await wait_until(pilot, lambda: epochs_shown(app) > 0)
        first = epochs_shown(app)
        assert f"epoch {app.state.epoch}" in screen_text(app)
        with open(path, "ab") as handle:
            handle.write(b"".join(lines[6:-3]) + lines[-3][:40])
        await wait_until(pilot, lambda: epochs_shown(app) > first)
        await wait_until(pilot, lambda: "partial line (40 bytes)" in screen_text(app), what="the partial line")
        with open(path, "ab") as handle:
            handle.write(lines[-3][40:] + b"".join(lines[-2:]))
        await wait_until(pilot, lambda: finished(app))
        await pilot.pause()
        assert epochs_shown(app) == TRAIN_EPOCHS and f"epoch {TRAIN_EPOCHS}" in screen_text(app)
        assert app.state.problem_count == 0

    drive(WatchApp(run_dir, poll_seconds=0.05), script, size=(80, 24))


def test_a_ppo_run_fills_the_ppo_panels(ppo_run: Path) -> None:
    async def script(app: WatchApp, pilot: Any) -> None:
        await wait_until(pilot, lambda: len(app.state.rounds) == 2)
        await pilot.pause()
        text = screen_text(app)
        rows = text.splitlines()
        assert " PPO " in text and "round 2" in text and "envs 2" in text
        for env in (0, 1):
            view = app.state.envs[env]
            row = next(line for line in rows if line.startswith(f" {env}  "))
            assert fmt_pct(view.val_accuracy) in row and f"{view.last_return:+.3f}" in row
        latest = app.state.rounds[-1]
        health = next(line for line in rows if "entropy" in line and "│" in line)
        assert f"{latest['entropy']:.3g}" in health
        assert "expl var" in text and "clip frac" in text and "value loss" in text
        assert "WAIT" in text and "GERMINATE" in text  # action mix
        assert "accuracy_delta" in text and "rewards (last round, per step)" in text
        assert not app.query_one(SlotTable).display

    drive(WatchApp(ppo_run, poll_seconds=0.05), script, size=(120, 40))


def test_a_wide_terminal_puts_the_log_beside_the_panels(train_run: tuple[Path, dict[str, Any]]) -> None:
    async def script(app: WatchApp, pilot: Any) -> None:
        await wait_until(pilot, lambda: finished(app))
        await pilot.pause()
        assert app.query_one("#right").display and app.query_one("#curves").display
        assert not app.query_one("#main").has_class("-narrow")
        left, right = app.query_one("#left").region, app.query_one("#right").region
        assert right.x >= left.right and right.height > 30  # side by side, the log the full height
        assert "run_finished" in screen_text(app)

    drive(WatchApp(train_run[0], poll_seconds=0.05), script, size=(180, 50))


@pytest.mark.slow
def test_a_10000_epoch_file_loads_while_keys_still_work(tmp_path: Path) -> None:
    epochs = 10_000
    text = "".join(cost.ev.event_to_json(event) + "\n" for event in cost.synthetic_run(epochs))

    async def script(app: WatchApp, pilot: Any) -> None:
        await pilot.pause()
        (tmp_path / "events.jsonl").write_text(text, encoding="utf-8")  # the whole run appears at once
        await wait_until(pilot, lambda: len(app.state.epochs) > 0)
        loaded_when_help_opened: list[int] = []
        show_help = app.action_help

        def recording_help() -> None:  # pilot.press returns only once the app is idle: look inside
            loaded_when_help_opened.append(len(app.state.epochs))
            show_help()

        app.action_help = recording_help  # type: ignore[method-assign]
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert loaded_when_help_opened[0] < epochs, "the key waited for the whole file"
        await pilot.press("escape")
        await wait_until(pilot, lambda: len(app.state.epochs) == epochs, timeout=120)
        await pilot.pause()
        assert f"epoch {epochs}" in screen_text(app)
        # Reads are cut into slices, so no poll holds the keys up for long (about 0.1 s measured).
        assert app.longest_poll_seconds < 1.0, app.longest_poll_seconds

    drive(WatchApp(tmp_path, poll_seconds=0.05), script, size=(100, 30))


def test_copying_a_run_keeps_the_svg_export_working(tmp_path: Path, train_run: tuple[Path, dict[str, Any]]) -> None:
    shutil.copy(train_run[0] / "events.jsonl", tmp_path / "events.jsonl")

    async def script(app: WatchApp, pilot: Any) -> None:
        await wait_until(pilot, lambda: finished(app))
        path = app.save_screenshot(path=str(tmp_path), filename="watch.svg")
        assert Path(path).read_text(encoding="utf-8").startswith("<svg")

    drive(WatchApp(tmp_path, poll_seconds=0.05), script, size=(100, 30))
