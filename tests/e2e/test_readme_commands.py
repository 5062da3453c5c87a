"""The README's command table, for every built-in task, where the matrix does not already cover it.

Covered elsewhere: `esper train` (--task, --controller, --epochs, --seed, --config, --out,
--resume, --device cpu, --data-dir, --text-file, --stop-after) and `esper export` and
`esper audit PATH` in test_matrix.py; `esper ppo` (--task, --envs, --rounds,
--episode-length, --out, --imitate) for every task in the session's agent fixture;
`esper blueprints --width/--json` in tests/blueprints; `esper audit --json/--self-test`
in tests/checkpoints; `esper bench --json` in tests/bench.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from esper.cli.main import main
from esper.growth_rl.agent_io import load_agent

from .support import BASE_CONFIG, TASKS, data_args, ppo_args

pytestmark = pytest.mark.slow


def test_tasks_lists_every_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "--json"]) == 0
    assert [record["name"] for record in json.loads(capsys.readouterr().out)] == TASKS
    assert main(["tasks"]) == 0
    table = capsys.readouterr().out
    assert all(task in table for task in TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_train_default_out_dir(
    task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_files: dict[str, dict[str, str]]
) -> None:
    """Without --out a run goes to runs/TASK-CONTROLLER-seedS under the current directory."""
    config = tmp_path / "config.toml"
    config.write_text(BASE_CONFIG, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--task", task, "--controller", "static", "--epochs", "1", "--seed", "2",
                 "--config", str(config), "--device", "cpu", "--no-progress", *data_args(data_files.get(task, {}))])
    assert code == 0
    out = tmp_path / "runs" / f"{task}-static-seed2"
    for name in ("events.jsonl", "summary.json", "checkpoint.pt", "report.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["task"] == task


@pytest.mark.parametrize("task", TASKS)
def test_train_show_config(
    task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`esper train --task T --show-config`: the resolved plan as JSON, nothing written."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--task", task, "--show-config"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["task"] == task
    assert {"heuristic", "gates", "blueprints", "max_seeds", "epochs"} <= plan.keys()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("task", TASKS)
def test_frontier(task: str, tmp_path: Path, data_files: dict[str, dict[str, str]]) -> None:
    """`esper frontier --task T --widths --seeds --seed-start --out` (the README's evidence command), tiny."""
    out = tmp_path / "frontier"
    code = main(["frontier", "--task", task, "--widths", "0.5,1", "--seeds", "1", "--seed-start", "100",
                 "--epochs", "1", "--max-batches-per-epoch", "1", "--workers", "1", "--out", str(out),
                 *data_args(data_files.get(task, {}))])
    assert code == 0
    record = json.loads((out / "frontier.json").read_text(encoding="utf-8"))
    runs = record["runs"]
    assert sorted((run["width"], run["controller"]) for run in runs) == [
        (0.5, "heuristic"), (0.5, "static"), (1.0, "heuristic"), (1.0, "static")
    ]
    assert all(run["seed"] == 100 for run in runs)
    assert (out / "frontier.png").is_file()


@pytest.mark.parametrize("task", TASKS)
def test_compare(
    task: str, tmp_path: Path, data_files: dict[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "compare"
    code = main(["compare", "--task", task, "--seeds", "1", "--epochs", "1", "--max-batches-per-epoch", "1",
                 "--out", str(out), "--json", *data_args(data_files.get(task, {}))])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["variant"] for row in rows] == ["static", "heuristic", "random", "static-wide"]
    for row in rows:
        assert 0.0 <= row["test_accuracy_mean"] <= 1.0 and len(row["per_seed"]) == 1
    # The widened host is at least the grown model's size (rounded to whole widths).
    heuristic, wide = rows[1]["total_params_mean"], rows[3]["total_params_mean"]
    assert wide >= 0.95 * heuristic
    assert json.loads((out / "compare.json").read_text(encoding="utf-8")) == rows


def test_compare_without_the_task_data_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["compare", "--task", "cifar10", "--seeds", "1", "--epochs", "1", "--data-dir",
                 str(tmp_path / "nowhere"), "--out", str(tmp_path / "compare")])
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("esper compare:")]
    assert len(lines) == 1 and "nowhere: no such directory" in lines[0] and "--data-dir" in lines[0]


@pytest.mark.parametrize("task", TASKS)
def test_evaluate_every_controller(
    task: str,
    tmp_path: Path,
    data_files: dict[str, dict[str, str]],
    agent_for: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy = f"policy:{agent_for(task)}"
    capsys.readouterr()  # making the agent (on first use) printed esper ppo's lines
    controllers = ["static", "random", "heuristic", policy]
    code = main(["evaluate", "--task", task, "--controllers", ",".join(controllers), "--seeds", "1",
                 "--epochs", "2", "--max-batches", "1", "--json", "--out", str(tmp_path),
                 *data_args(data_files.get(task, {}))])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["controller"] for row in rows] == controllers
    for row in rows:
        assert row["runs"] == 1 and 0.0 <= row["test_accuracy_mean"] <= 1.0
        assert math.isfinite(row["total_params_mean"])
    document = json.loads((tmp_path / "evaluate.json").read_text(encoding="utf-8"))
    assert document["task"] == task and len(document["runs"]) == len(controllers)


@pytest.mark.parametrize("task", TASKS)
def test_ppo_resume(task: str, tmp_path: Path, agent_for: Callable[[str], Path]) -> None:
    """`esper ppo --resume DIR/agent.pt --rounds 2` continues the task's one-round agent."""
    agent = agent_for(task)
    config = agent.parent.parent / "ppo.toml"
    out = tmp_path / "continued"
    code = main([*ppo_args(task, str(config)), "--rounds", "2", "--resume", str(agent), "--out", str(out)])
    assert code == 0
    continued = load_agent(out / "agent.pt")
    assert continued.meta.task == task and continued.meta.round == 2 and len(continued.meta.history) == 2
    assert load_agent(agent).meta.round == 1  # the agent resumed from is left as it was
