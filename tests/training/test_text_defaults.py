"""The text task's own growth defaults: resolved per field under what a run sets, recorded, kept on resume."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from esper.control.heuristic import HeuristicConfig
from esper.seeds.gates import GateConfig
from esper.tasks import TaskDefaults, default_tasks
from esper.telemetry.replay import read_events
from esper.training.config import TrainConfig, build_config
from esper.training.plan import PlanError, resolve_plan
from esper.training.preflight import validate_run_inputs
from esper.training.run_io import load_run
from esper.training.trainer import run_training

ROOT = Path(__file__).resolve().parents[2]
TEXT_FAST = ROOT / "benchmarks" / "frontier" / "configs" / "text-fast.toml"
CORPUS = "def grow(model):\n    return model  # a seed starts as the identity\n" * 400
# A tiny text run: 2 slots, one batch of 8 windows per epoch.
TINY: dict[str, Any] = {
    "max_batches_per_epoch": 1,
    "batch_size": 8,
    "host_overrides": {"d_model": 16, "n_heads": 2, "n_layers": 2},
}
# The text task's defaults before it had growth settings of its own.
OLD_TEXT = {"max_seeds": 3, "heuristic": {}, "gates": {}}
OLD_TEXT_BLUEPRINTS = ("lora", "attention", "mlp_small", "norm", "mlp")


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return str(path)


def _old_text_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = default_tasks()
    task = tasks.get("text")
    old = dataclasses.replace(
        task, defaults=task.defaults.model_copy(update=OLD_TEXT), default_blueprints=OLD_TEXT_BLUEPRINTS
    )
    monkeypatch.setitem(tasks._tasks, "text", old)


def _germinations(run_dir: Path) -> list[int]:
    return [
        event.epoch
        for event in read_events(run_dir / "events.jsonl")
        if event.type == "seed_stage_changed" and event.to_stage == "GERMINATED"  # type: ignore[attr-defined]
    ]


# ------------------------------------------------------------------ resolution
def test_the_text_defaults_are_the_text_fast_settings() -> None:
    fast = tomllib.loads(TEXT_FAST.read_text(encoding="utf-8"))
    plan = resolve_plan(TrainConfig(task="text"))
    assert plan.blueprints == tuple(fast["blueprints"]) == ("attention", "mlp_small", "norm", "mlp")
    assert plan.max_seeds == fast["max_seeds"] == 4
    assert plan.heuristic == HeuristicConfig(**fast["heuristic"])
    assert plan.gates == GateConfig(**fast["gates"])
    # The same plan as text-fast.toml given as a growth config (what esper frontier --growth-config does).
    assert resolve_plan(TrainConfig.model_validate({"task": "text", **fast})) == plan


def test_a_value_the_run_sets_wins_field_by_field() -> None:
    config = build_config(
        {"task": "text", "heuristic": {"max_live_experiments": 2}, "gates": {"g2_min_epochs": 2}},
        {"max_seeds": 1},
    )
    plan = resolve_plan(config.model_copy(update={"blueprints": ["lora", "mlp"]}))
    assert plan.heuristic.max_live_experiments == 2
    # The rest of the text defaults stay.
    assert plan.heuristic.blend_tempo == 0 and plan.heuristic.rotate_blueprints is True
    assert plan.heuristic.fossilize_min_contribution_points == 0.0
    assert plan.gates.g2_min_epochs == 2 and plan.gates.permissive is True
    assert plan.max_seeds == 1 and plan.blueprints == ("lora", "mlp")  # lora is still there when asked for
    # A value equal to the global default still wins over the task's.
    plan = resolve_plan(TrainConfig(task="text", heuristic={"blend_tempo": 5}, gates=GateConfig(permissive=False)))
    assert plan.heuristic.blend_tempo == 5 and plan.heuristic.min_epoch_to_germinate == 0
    assert plan.gates.permissive is False and plan.gates.g2_min_epochs == 0


@pytest.mark.parametrize("task", ["mnist1d", "mnist1d-blind", "cifar10"])
def test_the_other_tasks_keep_the_global_defaults(task: str) -> None:
    defaults = default_tasks().get(task).defaults
    assert defaults.heuristic == {} and defaults.gates == {}
    assert resolve_plan(TrainConfig(task=task)).heuristic == HeuristicConfig()
    assert resolve_plan(TrainConfig(task=task)).gates == GateConfig(permissive=True)
    # A [gates] table replaces the whole gate config there, as it always did.
    table = TrainConfig.model_validate({"task": task, "gates": {"g2_min_epochs": 2}})
    assert resolve_plan(table).gates == GateConfig(g2_min_epochs=2)


def test_a_bad_setting_is_one_error_naming_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PlanError, match=r"^heuristic: max_live_experiments: expected int, got str$"):
        resolve_plan(TrainConfig(task="text", heuristic={"max_live_experiments": "2"}))
    with pytest.raises(PlanError, match=r"^heuristic: blend_tempoo: unknown key"):
        resolve_plan(TrainConfig(task="text", heuristic={"blend_tempoo": 0}))
    with pytest.raises(ValidationError, match=r"gates: g2_min_epoch: unknown key"):
        TaskDefaults(epochs=1, batch_size=1, host_lr=1.0, seed_lr=1.0, max_seeds=1, seed_budget_ratio=1.0,
                     gates={"g2_min_epoch": 0})  # fmt: skip
    tasks = default_tasks()
    task = tasks.get("text")
    broken = task.defaults.model_copy(update={"heuristic": {"blend_tempoo": 0}})
    monkeypatch.setitem(tasks._tasks, "text", dataclasses.replace(task, defaults=broken))
    with pytest.raises(PlanError, match=r"^task 'text' default heuristic: blend_tempoo: unknown key"):
        resolve_plan(TrainConfig(task="text"))


# ------------------------------------------------------------------ recorded, kept on resume
def test_a_text_run_records_and_stores_the_resolved_values(tmp_path: Path, corpus: str) -> None:
    run_dir = tmp_path / "run"
    config = TrainConfig(task="text", epochs=3, text_file=corpus, **TINY)
    summary = run_training(config, out_dir=run_dir, stop_after=2)
    started = next(iter(read_events(run_dir / "events.jsonl")))
    for plan in (started.plan, summary["plan"]):  # type: ignore[attr-defined]
        assert plan["heuristic"]["blend_tempo"] == 0 and plan["heuristic"]["max_live_experiments"] == 4
        assert plan["gates"]["g2_min_epochs"] == 0 and plan["max_seeds"] == 4
        assert plan["blueprints"] == ["attention", "mlp_small", "norm", "mlp"]
    # The checkpoint's model carries the gates it was built with.
    assert load_run(run_dir / "checkpoint.pt").model.gate_config == GateConfig(permissive=True, g2_min_epochs=0)


@pytest.mark.slow  # three tiny text runs
def test_an_old_text_run_resumes_as_it_started(
    tmp_path: Path, corpus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run started under the old text defaults continues with them after the defaults changed."""
    config = TrainConfig(task="text", epochs=4, text_file=corpus, **TINY)
    with monkeypatch.context() as patch:
        _old_text_defaults(patch)
        whole = run_training(config, out_dir=tmp_path / "whole")
        run_training(config, out_dir=tmp_path / "cut", stop_after=2)
        old_plan = resolve_plan(config)
    checkpoint = tmp_path / "cut" / "checkpoint.pt"
    # Now the new defaults are in force: a fresh run would differ, the resumed one does not.
    assert resolve_plan(config) != old_plan
    assert validate_run_inputs(TrainConfig(), tmp_path / "cut", resume=checkpoint).plan == old_plan
    resumed = run_training(TrainConfig(), out_dir=tmp_path / "cut", resume=checkpoint)
    for key in ("test_accuracy", "test_loss", "seeds", "total_params", "plan"):
        assert resumed[key] == whole[key], key


# ------------------------------------------------------------------ as a user types it
def _esper(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "esper", *argv], cwd=cwd, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.mark.slow  # a fresh interpreter per command
def test_show_config_prints_the_resolved_values(tmp_path: Path) -> None:
    result = _esper(tmp_path, "train", "--task", "text", "--show-config")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["heuristic"]["blend_tempo"] == 0 and plan["gates"]["g2_min_epochs"] == 0
    assert plan["max_seeds"] == 4 and plan["blueprints"] == ["attention", "mlp_small", "norm", "mlp"]
    (tmp_path / "run.toml").write_text('task = "text"\n[heuristic]\nmax_live_experiments = 2\n', encoding="utf-8")
    plan = json.loads(_esper(tmp_path, "train", "--config", "run.toml", "--show-config").stdout)
    assert plan["heuristic"]["max_live_experiments"] == 2 and plan["heuristic"]["blend_tempo"] == 0
    plan = json.loads(_esper(tmp_path, "train", "--task", "mnist1d", "--show-config").stdout)
    assert plan["heuristic"] == HeuristicConfig().model_dump(mode="json")
    assert list(tmp_path.iterdir()) == [tmp_path / "run.toml"]  # nothing written
    (tmp_path / "bad.toml").write_text('task = "text"\n[heuristic]\nblend_tempoo = 0\n', encoding="utf-8")
    bad = _esper(tmp_path, "train", "--config", "bad.toml", "--show-config")
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("esper train: heuristic: blend_tempoo: unknown key (valid keys: ")


@pytest.mark.slow  # a fresh interpreter, then a tiny text run and its resume
def test_show_config_of_a_resume_prints_the_plan_it_started_with(
    tmp_path: Path, corpus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrainConfig(task="text", epochs=3, text_file=corpus, **TINY)
    with monkeypatch.context() as patch:
        _old_text_defaults(patch)
        run_training(config, out_dir=tmp_path / "run", stop_after=1)
    result = _esper(tmp_path, "train", "--resume", "run/checkpoint.pt", "--show-config")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["max_seeds"] == 3 and plan["blueprints"] == list(OLD_TEXT_BLUEPRINTS)
    assert plan["heuristic"] == HeuristicConfig().model_dump(mode="json")


# The text task's settings before it had its own: the global heuristic and gate defaults.
OLD_TOML = """\
blueprints = ["lora", "attention", "mlp_small", "norm", "mlp"]
max_seeds = 3
[gates]
permissive = true
g2_min_epochs = 3
[heuristic]
rotate_blueprints = false
min_epoch_to_germinate = 1
min_epochs_left_to_germinate = 15
max_live_experiments = 1
blend_tempo = 5
fossilize_min_contribution_points = 0.5
min_epochs_since_prune = 5
"""


@pytest.mark.slow  # a fresh interpreter per run
def test_esper_train_task_text_germinates_at_once(tmp_path: Path, corpus: str) -> None:
    tiny = "max_batches_per_epoch = 1\nbatch_size = 8\n[host_overrides]\nd_model = 16\nn_heads = 2\nn_layers = 2\n"
    (tmp_path / "tiny.toml").write_text(tiny, encoding="utf-8")
    (tmp_path / "old.toml").write_text(OLD_TOML + tiny.replace("max_batches_per_epoch = 1\nbatch_size = 8\n", ""),
                                       encoding="utf-8")  # fmt: skip
    old_fields = tomllib.loads((tmp_path / "old.toml").read_text(encoding="utf-8"))
    assert HeuristicConfig(**old_fields["heuristic"]) == HeuristicConfig()  # the file is the old defaults
    common = ("--task", "text", "--text-file", corpus, "--epochs", "12", "--no-progress")
    new = _esper(tmp_path, "train", *common, "--config", "tiny.toml", "--out", "new")
    assert new.returncode == 0, new.stderr
    # The first decision (after epoch 1) germinates; a seed is judged 4 epochs later, and the next
    # one, the next blueprint of the list in the next slot, starts at once.
    summary = json.loads((tmp_path / "new" / "summary.json").read_text(encoding="utf-8"))
    assert [(s["germinated_epoch"], s["slot"], s["blueprint"]) for s in summary["seeds"]] == [
        (1, "r0c0", "attention"), (6, "r0c1", "mlp_small"),
    ]  # fmt: skip
    assert all(s["ended_epoch"] == s["germinated_epoch"] + 4 for s in summary["seeds"])
    # With the old settings the germination window (epoch >= 1 while 15 epochs remain) never opens in 12.
    old = _esper(tmp_path, "train", *common, "--config", "old.toml", "--out", "old")
    assert old.returncode == 0, old.stderr
    assert _germinations(tmp_path / "old") == []


# ------------------------------------------------------------------ the committed evidence
CONFIGS = ROOT / "benchmarks" / "frontier" / "configs"
EVIDENCE = [
    path for path in [CONFIGS / "text-rotate.toml", *sorted((CONFIGS / "textwhy").glob("*.toml"))]
    if tomllib.loads(path.read_text(encoding="utf-8")).get("controller") != "static"
]


@pytest.mark.parametrize("path", [*EVIDENCE, CONFIGS / "text-global-defaults.toml"], ids=lambda path: path.name)
def test_the_committed_text_configs_resolve_to_the_plans_they_ran_with(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They were measured under the old text defaults: they pin what they relied on, so they rerun the same."""
    values = {"task": "text", **tomllib.loads(path.read_text(encoding="utf-8"))}
    now = resolve_plan(TrainConfig.model_validate(values))
    with monkeypatch.context() as patch:
        _old_text_defaults(patch)
        assert now == resolve_plan(TrainConfig.model_validate(values))
        if path.name == "text-global-defaults.toml":
            assert now == resolve_plan(TrainConfig(task="text"))


# ------------------------------------------------------------------ the other entry points
def _started_plan(run_dir: Path) -> dict[str, Any]:
    plan = next(iter(read_events(run_dir / "events.jsonl"))).plan  # type: ignore[attr-defined]
    assert isinstance(plan, dict)
    return plan


@pytest.mark.slow  # two tiny text runs
def test_compare_and_frontier_grow_text_with_the_text_defaults(tmp_path: Path, corpus: str) -> None:
    from esper.training.compare import _run
    from esper.training.frontier import FrontierSpec, plan, run_job

    extra = {"text_file": corpus, "max_batches_per_epoch": 1, "batch_size": 8}
    _run("text", "heuristic", 0, 2, tmp_path / "compare", TINY["host_overrides"], extra)
    spec = FrontierSpec(
        task="text", widths=(0.25,), seeds=(0,), controllers=("heuristic",), epochs=2,
        max_batches_per_epoch=1, text_file=corpus,
    )  # fmt: skip
    job = next(job for job in plan(spec, tmp_path / "frontier") if job.controller == "heuristic")
    run_job(job)
    expected = resolve_plan(TrainConfig(task="text"))
    for run_dir in (tmp_path / "compare", Path(job.run_dir)):
        recorded = _started_plan(run_dir)
        assert recorded["heuristic"] == expected.heuristic.model_dump(mode="json")
        assert recorded["gates"] == expected.gates.model_dump(mode="json")
        assert recorded["blueprints"] == list(expected.blueprints) and recorded["max_seeds"] == 4


def test_a_ppo_environment_on_text_takes_the_text_gates_and_expert(corpus: str) -> None:
    from esper.growth_rl.environment import EnvConfig, GrowthEnv

    train = TrainConfig(task="text", text_file=corpus, **TINY)
    env = GrowthEnv(EnvConfig(train=train, episode_length=2, shapley=False))
    env.reset(0)
    run = env.run
    assert run is not None
    # The lifecycle's rules on the policy's seeds; the heuristic is what the imitation expert runs.
    assert run.model.gate_config == GateConfig(permissive=True, g2_min_epochs=0)
    assert run.plan.heuristic.blend_tempo == 0 and run.plan.heuristic.rotate_blueprints is True
    assert env.layout is not None and env.layout.blueprints == ("attention", "mlp_small", "norm", "mlp")
