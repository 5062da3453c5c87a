"""`esper ppo` and `esper evaluate` end to end, the policy controller, and the throughput suite's shape."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from esper.bench.rl_throughput import rl_throughput
from esper.bench.timing import BenchSettings, TimingPlan
from esper.cli import main as cli_main
from esper.control.legality import GrowthLimits
from esper.control.registry import build_controller
from esper.growth_rl.agent_io import AgentMismatchError, load_agent
from esper.growth_rl.imitation import ImitationConfig
from esper.growth_rl.policy_controller import PolicyController, load_policy_controller
from esper.telemetry import events as ev
from esper.telemetry.replay import read_events
from esper.training.config import TrainConfig
from esper.training.growth_run import GrowthRun

OUR_COMMANDS = ("esper.cli.ppo_cmd", "esper.cli.evaluate_cmd")


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure `esper ppo` / `esper evaluate` are reachable through esper.cli.main."""
    missing = tuple(name for name in OUR_COMMANDS if name not in cli_main.COMMANDS)
    monkeypatch.setattr(cli_main, "COMMANDS", cli_main.COMMANDS + missing)


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-env, 3-epoch, 2-round PPO run through the CLI (workers in this process)."""
    out = tmp_path_factory.mktemp("ppo")
    config = out / "run.toml"
    config.write_text(
        "[train]\nmax_batches_per_epoch = 1\n[policy]\nhidden = 16\nlstm_hidden = 16\nhead_hidden = 8\n",
        encoding="utf-8",
    )
    missing = tuple(name for name in OUR_COMMANDS if name not in cli_main.COMMANDS)
    saved = cli_main.COMMANDS
    cli_main.COMMANDS = saved + missing
    try:
        code = cli_main.main([
            "ppo", "--task", "mnist1d-blind", "--envs", "2", "--rounds", "2", "--episode-length", "3",
            "--workers", "0", "--seed", "3", "--config", str(config), "--out", str(out), "--no-progress",
        ])
    finally:
        cli_main.COMMANDS = saved
    assert code == 0
    return out


def test_ppo_writes_agent_events_and_learning_curve(agent_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert (agent_dir / "learning.png").stat().st_size > 10_000
    agent = load_agent(agent_dir / "agent.pt")
    assert agent.meta.round == 2 and agent.meta.task == "mnist1d-blind" and len(agent.meta.history) == 2
    assert agent.meta.hyperparameters["seed"] == 3
    events = read_events(agent_dir / "events.jsonl")
    updates = [e for e in events if isinstance(e, ev.PpoUpdate)]
    assert [u.round for u in updates] == [0, 1]
    assert {"mean_return", "entropy", "approx_kl", "clip_fraction", "explained_variance"} <= set(updates[0].metrics)
    rewards = [e for e in events if isinstance(e, ev.RewardComputed)]
    assert len(rewards) == 2 * 3 * 2  # rounds x steps x envs (the expert's demonstrations are muted)
    assert sorted({e.env for e in rewards}) == [0, 1]
    imitation = [e for e in events if isinstance(e, ev.ImitationUpdate)]  # on by default
    assert [e.pass_index for e in imitation] == list(range(ImitationConfig().passes))
    assert imitation[-1].metrics["episodes"] == ImitationConfig().rounds * 2


def test_ppo_progress_lines_and_nothing_to_do_on_a_finished_resume(
    agent_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    code = cli_main.main(["ppo", "--resume", str(agent_dir / "agent.pt"), "--rounds", "2", "--workers", "0",
                          "--envs", "2", "--episode-length", "3", "--seed", "3", "--config",
                          str(agent_dir / "run.toml"), "--no-progress"])
    assert code == 0
    assert "nothing to do: the agent already completed 2 of 2 rounds" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--out", "unused", "--envs", "0"], "envs: expected a value >= 1, got 0"),
        (["--out", "unused", "--task", "nope"], "unknown task 'nope'"),
        (["--out", "unused", "--resume", "missing.pt"], "missing.pt: no such file"),
        ([], "--out DIR is required"),
    ],
)
def test_ppo_bad_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert cli_main.main(["ppo", *argv]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")


def test_ppo_config_file_unknown_key_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[ppo]\nlearning_rate = 0.1\n", encoding="utf-8")
    assert cli_main.main(["ppo", "--config", str(config), "--out", str(tmp_path)]) == 2
    assert "ppo.learning_rate: unknown key" in capsys.readouterr().err.replace("\n", " ")
    config.write_text("[train]\nseed = 4\n", encoding="utf-8")
    assert cli_main.main(["ppo", "--config", str(config), "--out", str(tmp_path)]) == 2
    assert "train.seed: set by the PPO run: use seed" in capsys.readouterr().err.replace("\n", " ")
    config.write_text("[train]\nmax_batches_per_epoch = 'x'\n", encoding="utf-8")
    assert cli_main.main(["ppo", "--config", str(config), "--out", str(tmp_path)]) == 2
    assert "train.max_batches_per_epoch" in capsys.readouterr().err.replace("\n", " ")
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["ppo", "--reward", "dense"])
    assert exit_info.value.code == 2
    config.write_text("envs = 1\n", encoding="utf-8")  # a cross-field problem is named at the key it blames
    assert cli_main.main(["ppo", "--config", str(config), "--out", str(tmp_path)]) == 2
    blamed = "bad.toml: ppo.n_minibatches: expected a value <= envs (1), got 2"
    assert blamed in capsys.readouterr().err.replace("\n", " ")
    config.write_text("imitation = 3\n", encoding="utf-8")
    assert cli_main.main(["ppo", "--config", str(config), "--imitate", "1", "--out", str(tmp_path)]) == 2
    assert "imitation: expected a table of settings, got int" in capsys.readouterr().err.replace("\n", " ")


def test_ppo_imitate_0_is_pure_ppo_and_the_flag_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        "[train]\nmax_batches_per_epoch = 1\n[imitation]\nrounds = 2\npasses = 3\n"
        "[policy]\nhidden = 8\nlstm_hidden = 8\nhead_hidden = 8\n",
        encoding="utf-8",
    )
    common = ["ppo", "--envs", "2", "--rounds", "1", "--episode-length", "2", "--workers", "0",
              "--config", str(config), "--no-progress"]
    assert cli_main.main([*common, "--imitate", "0", "--out", str(tmp_path / "pure")]) == 0
    assert not [e for e in read_events(tmp_path / "pure" / "events.jsonl") if isinstance(e, ev.ImitationUpdate)]
    assert load_agent(tmp_path / "pure" / "agent.pt").meta.hyperparameters["imitation"]["rounds"] == 0
    assert cli_main.main([*common, "--out", str(tmp_path / "cloned")]) == 0
    cloned = [e for e in read_events(tmp_path / "cloned" / "events.jsonl") if isinstance(e, ev.ImitationUpdate)]
    assert [e.pass_index for e in cloned] == [0, 1, 2] and cloned[0].metrics["episodes"] == 4


def test_evaluate_json_rows(agent_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    policy = f"policy:{agent_dir / 'agent.pt'}"
    code = cli_main.main([
        "evaluate", "--task", "mnist1d-blind", "--controllers", f"static,heuristic,{policy}", "--seeds", "2",
        "--epochs", "2", "--max-batches", "1", "--json", "--out", str(tmp_path),
    ])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["controller"] for row in rows] == ["static", "heuristic", policy]
    for row in rows:
        assert {"controller", "test_accuracy_mean", "test_accuracy_std", "total_params_mean"} <= set(row)
        assert 0.0 <= row["test_accuracy_mean"] <= 1.0 and row["runs"] == 2 and row["seeds"] == [10_000, 10_001]
        assert math.isclose(row["test_accuracy_std"], torch.tensor(row["test_accuracies"]).std().item(),
                            rel_tol=1e-6, abs_tol=1e-9)
    assert rows[0]["accuracy_gain_points_vs_static"] == 0.0
    document = json.loads((tmp_path / "evaluate.json").read_text(encoding="utf-8"))
    assert len(document["runs"]) == 6 and document["rows"] == rows


def test_evaluate_bad_arguments_exit_2(agent_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main.main(["evaluate", "--controllers", "static,bogus"]) == 2
    assert "unknown controller 'bogus'" in capsys.readouterr().err
    assert cli_main.main(["evaluate", "--controllers", "policy:/no/such.pt"]) == 2
    assert "no such agent file" in capsys.readouterr().err
    assert cli_main.main(["evaluate", "--task", "mnist1d", "--controllers", f"policy:{agent_dir / 'agent.pt'}"]) == 2
    assert "trained on task 'mnist1d-blind', not 'mnist1d'" in capsys.readouterr().err.replace("\n", " ")
    assert cli_main.main(["evaluate", "--seeds", "0"]) == 2


def test_policy_controller_runs_a_growth_run_and_resumes(agent_dir: Path) -> None:
    run = GrowthRun(TrainConfig(task="mnist1d-blind", epochs=4, max_batches_per_epoch=1, seed=10_000))
    controller = build_controller(
        f"policy:{agent_dir / 'agent.pt'}", blueprints=run.blueprints, limits=run.limits, seed=0
    )
    assert isinstance(controller, PolicyController) and controller.name == "policy"
    decisions = []
    for _ in range(2):
        decision = controller.decide(run.train_epoch(), run.model)
        assert run.apply(decision, controller.name).executed
        decisions.append(decision)
    saved = controller.state_dict()
    assert saved["decisions"] == 2 and isinstance(saved["h"], torch.Tensor)
    fresh = load_policy_controller(agent_dir / "agent.pt", blueprints=run.blueprints, limits=run.limits, seed=1)
    fresh.load_state_dict(saved)
    assert torch.equal(fresh.state[0], controller.state[0])
    with pytest.raises(ValueError, match="controller > c: missing required key"):
        fresh.load_state_dict({"h": saved["h"]})
    with pytest.raises(AgentMismatchError, match="blueprints: the agent has"):
        load_policy_controller(agent_dir / "agent.pt", blueprints=["norm"], limits=run.limits, seed=0)
    other = GrowthRun(TrainConfig(task="mnist1d-blind", epochs=2, max_batches_per_epoch=1,
                                  host_overrides={"widths": [8, 8]}))
    with pytest.raises(AgentMismatchError, match="differ from the agent's"):
        controller.decide(other.train_epoch(), other.model)
    limits = GrowthLimits(max_seeds=1, max_added_params=10)
    assert isinstance(load_policy_controller(agent_dir / "agent.pt", blueprints=run.blueprints, limits=limits,
                                             seed=0), PolicyController)


def test_rl_throughput_suite_shape() -> None:
    result = rl_throughput(BenchSettings(plan=TimingPlan(warmup=0, rounds=1, min_sample_ms=0.0), tiny=True))
    assert set(result) == {"env_steps_per_second", "vector_env_speedup", "vector_env_step_speedup"}
    rate = result["env_steps_per_second"]
    assert set(rate["cases"]) == {"K=1", "K=2"} and rate["value"] > 0
    for row in rate["cases"].values():
        assert {"ours_ms", "plain_ms", "speedup", "speedup_q1", "speedup_q3", "passed"} <= set(row)
    speedup = result["vector_env_speedup"]
    assert speedup["value"] > 0 and speedup["goal"] is None and speedup["passed"] is None
    assert len(speedup["cases"]["K=2"]["separate_seconds"]) == 2
    assert result["vector_env_step_speedup"]["value"] > 0


def test_train_with_a_policy_controller_checkpoints_and_resumes_its_state(agent_dir: Path, tmp_path: Path) -> None:
    """The `esper train --controller policy:PATH` path: run_training saves and restores the LSTM state."""
    from esper.training.run_io import load_run
    from esper.training.trainer import run_training

    config = TrainConfig(task="mnist1d-blind", controller=f"policy:{agent_dir / 'agent.pt'}", epochs=3,
                         max_batches_per_epoch=1, seed=10_000)
    summary = run_training(config, out_dir=tmp_path / "run", stop_after=2)
    assert summary["controller"] == "policy"
    saved = load_run(tmp_path / "run" / "checkpoint.pt").controller
    assert saved["decisions"] == 2 and isinstance(saved["h"], torch.Tensor)
    run_training(config, out_dir=tmp_path / "run", resume=tmp_path / "run" / "checkpoint.pt")
    assert load_run(tmp_path / "run" / "checkpoint.pt").controller["decisions"] == 3

