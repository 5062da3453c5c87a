"""The run plan: a config and its task's defaults resolved once, validated, recorded."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from esper.control.heuristic import HeuristicConfig
from esper.tasks import DEFAULT_TASK, default_tasks
from esper.telemetry.replay import read_events
from esper.training.config import TrainConfig
from esper.training.plan import PlanError, RunPlan, lookup_task, resolve_plan
from esper.training.preflight import validate_run_inputs
from esper.training.trainer import run_training


def test_task_defaults_become_concrete_values() -> None:
    plan = resolve_plan(TrainConfig())
    defaults = default_tasks().get(DEFAULT_TASK).defaults
    assert plan.task == DEFAULT_TASK
    assert plan.epochs == defaults.epochs and plan.batch_size == defaults.batch_size
    assert plan.optimizer.kind == "sgd"
    assert plan.optimizer.host_lr == defaults.host_lr and plan.optimizer.seed_lr == defaults.seed_lr
    assert plan.optimizer.momentum == defaults.momentum
    assert plan.blueprints == default_tasks().get(DEFAULT_TASK).default_blueprints
    assert isinstance(plan.heuristic, HeuristicConfig)
    assert plan.host.kind == "cnn" and plan.host.config["widths"] == [32, 64, 64]


def test_set_values_win_over_the_task_defaults() -> None:
    config = TrainConfig(
        task="mnist1d-blind",
        host_lr=0.01,
        seed_lr=0.02,
        epochs=4,
        blueprints=["norm"],
        heuristic={"blend_tempo": 3},
        host_overrides={"widths": [8, 16, 16]},
    )
    plan = resolve_plan(config)
    assert (plan.optimizer.host_lr, plan.optimizer.seed_lr, plan.epochs) == (0.01, 0.02, 4)
    assert plan.blueprints == ("norm",)
    assert plan.heuristic.blend_tempo == 3
    assert plan.host.config["widths"] == [8, 16, 16] and plan.host.config["kernel_size"] == 1


def test_adamw_has_no_momentum_in_its_plan() -> None:
    plan = resolve_plan(TrainConfig(task="text"))
    assert plan.optimizer.kind == "adamw" and plan.optimizer.momentum is None
    # The text host's vocabulary comes from the data: the plan is completed once it is known.
    assert plan.host.output_key == "vocab_size" and "vocab_size" not in plan.host.config
    assert plan.sized_for(37).host.config["vocab_size"] == 37


def test_a_plan_is_frozen() -> None:
    plan = resolve_plan(TrainConfig())
    with pytest.raises(ValidationError):
        plan.epochs = 3  # type: ignore[misc]


def test_the_output_size_must_agree_with_the_data() -> None:
    plan = resolve_plan(TrainConfig())
    assert plan.sized_for(10) is plan
    with pytest.raises(PlanError, match="'num_classes' is 10 but the task's data has 7 classes"):
        plan.sized_for(7)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"task": "nope"}, r"^--task: unknown task 'nope'; available tasks: mnist1d, "),
        (
            {"heuristic": {"germinate_thresold": 1}},
            r"^heuristic: germinate_thresold: unknown key \(valid keys: min_epoch_to_germinate, ",
        ),
        ({"heuristic": {"blend_tempo": "fast"}}, r"^heuristic: blend_tempo: "),
        (
            {"blueprints": ["conv_light", "conv_hevy"]},
            r"^blueprints: unknown cnn blueprint\(s\) 'conv_hevy' for task 'mnist1d'; available: ",
        ),
        ({"blueprints": []}, r"^blueprints: expected a non-empty list of names, got \[\]$"),
        ({"blueprints": ["norm", "norm"]}, r"^blueprints: names given more than once: norm$"),
        ({"host_overrides": {"widthz": [8]}}, r"^host_overrides: widthz: unknown key"),
        # A heuristic typo is refused whatever the controller.
        ({"controller": "random", "heuristic": {"typo": 1}}, r"^heuristic: typo: unknown key"),
    ],
)
def test_a_bad_setting_names_its_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(PlanError, match=message) as info:
        resolve_plan(TrainConfig.model_validate(fields))
    assert "\n" not in str(info.value)


def test_lookup_task_is_the_one_check_of_a_task_name() -> None:
    assert lookup_task("mnist1d").name == "mnist1d"
    with pytest.raises(PlanError, match=r"^--task: unknown task 'x'; available tasks: "):
        lookup_task("x")


def test_the_run_records_its_plan_in_run_started_and_summary(tmp_path: Path) -> None:
    config = TrainConfig(controller="static", epochs=1, max_batches_per_epoch=1, host_lr=0.02)
    summary = run_training(config, out_dir=tmp_path / "run")
    started = next(iter(read_events(tmp_path / "run" / "events.jsonl")))
    assert started.type == "run_started"
    assert started.config["host_lr"] == 0.02 and started.config["seed_lr"] is None
    expected = resolve_plan(config).sized_for(10).as_record()
    assert started.plan == expected
    assert summary["plan"] == expected
    assert summary["plan"]["optimizer"] == {
        "kind": "sgd", "host_lr": 0.02, "seed_lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "grad_clip": 1.0,
    }
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert on_disk["plan"] == expected
    assert RunPlan.model_validate_json(json.dumps(on_disk["plan"])) == resolve_plan(config).sized_for(10)


# ------------------------------------------------------------------ as a user types it
def _esper(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "esper", *argv], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.mark.slow  # a fresh interpreter per command
@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[heuristic]\ngerminate_thresold = 1\n", "esper train: heuristic: germinate_thresold: unknown key"),
        ('blueprints = ["conv_light", "conv_hevy"]\n', "esper train: blueprints: unknown cnn blueprint(s) 'conv_hevy'"),
    ],
    ids=["heuristic-typo", "unknown-blueprint"],
)
def test_esper_train_refuses_a_bad_config_at_once(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "bad.toml").write_text(toml, encoding="utf-8")
    result = _esper(tmp_path, "train", "--config", "bad.toml", "--no-progress")
    assert result.returncode == 2
    assert _one_line(result.stderr).startswith(message)
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # no runs/ directory, nothing written


@pytest.mark.slow  # a fresh interpreter per command
def test_esper_ppo_refuses_a_bad_train_table_at_once(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[train.heuristic]\ngerminate_thresold = 1\n", encoding="utf-8")
    result = _esper(tmp_path, "ppo", "--config", "bad.toml", "--out", "agent")
    assert result.returncode == 2
    assert _one_line(result.stderr).startswith(
        "esper ppo: bad.toml: train.heuristic.germinate_thresold: unknown key"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


@pytest.mark.slow  # a fresh interpreter per command
@pytest.mark.parametrize("command", ["evaluate", "frontier"])
def test_evaluate_and_frontier_refuse_an_unknown_task_at_once(tmp_path: Path, command: str) -> None:
    result = _esper(tmp_path, command, "--task", "nope", "--out", "out")
    assert result.returncode == 2
    assert f"esper {command}: --task: unknown task 'nope'; available tasks: mnist1d" in _one_line(result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_a_resume_keeps_the_recorded_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    # The task's default length (25 epochs), stopped after the first.
    run_training(TrainConfig(controller="static", max_batches_per_epoch=1), out_dir=run_dir, stop_after=1)
    checkpoint = run_dir / "checkpoint.pt"
    # The same plan, and an extended run (epochs may change), are accepted.
    assert validate_run_inputs(TrainConfig(), run_dir, resume=checkpoint).plan.epochs == 25
    assert validate_run_inputs(TrainConfig(epochs=30), run_dir, resume=checkpoint).plan.epochs == 30
    # A task default that changed since the run started would change the run silently: the run
    # continues with the values it started with.
    tasks = default_tasks()
    task = tasks.get("mnist1d")
    changed_defaults = task.defaults.model_copy(update={"host_lr": 0.07, "epochs": 9, "heuristic": {"blend_tempo": 1}})
    monkeypatch.setitem(tasks._tasks, "mnist1d", dataclasses.replace(task, defaults=changed_defaults))
    assert resolve_plan(TrainConfig()).optimizer.host_lr == 0.07
    plan = validate_run_inputs(TrainConfig(), run_dir, resume=checkpoint).plan
    assert plan.optimizer.host_lr == 0.05 and plan.heuristic.blend_tempo == 5
    assert plan.epochs == 25  # the run's length is the one it started with too
    assert plan.sized_for(10).as_record() == next(iter(read_events(run_dir / "events.jsonl"))).plan
