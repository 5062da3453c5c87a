"""The PPO config tree: validated once at the start with full key paths, recorded in agent.pt, documented."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from esper.cli import main as cli_main
from esper.growth_rl import environment, training
from esper.growth_rl.agent_io import AgentMismatchError, load_agent
from esper.growth_rl.environment import ENV_OWNED_KEYS
from esper.growth_rl.training import RUN_OWNED_TRAIN_KEYS, PPORunConfig, check_resume, config_error_message
from esper.training.config import TrainConfig
from esper.training.growth_run import GrowthRun

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "ppo_mnist1d_blind"
# The quality run's command line (benchmarks/ppo_mnist1d_blind/README.md) without --out.
QUALITY_FLAGS = ["--task", "mnist1d-blind", "--envs", "8", "--workers", "2", "--episode-length", "25",
                 "--rounds", "300", "--seed", "0"]


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        PPORunConfig.model_validate(data)
    return config_error_message(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"reward": {"rent_weight": "x"}}, "reward.rent_weight: expected float, got str"),
        ({"ppo": {"gamma": 1.5}}, "ppo.gamma: expected a value <= 1.0, got 1.5"),
        ({"policy": {"hidden": 0}}, "policy.hidden: expected a value >= 1, got 0"),
        ({"imitation": {"expert": "oracle"}}, "imitation.expert: expected one of"),
        ({"train": {"max_batches_per_epok": 2}}, "train.max_batches_per_epok: unknown key"),
        ({"train": {"gates": {"permissive": 1}}}, "train.gates.permissive: expected bool, got int"),
        ({"train": 3}, "train: expected dict (TrainConfig), got int"),
        ({"train": {"heuristic": {"min_epoch_to_germinat": 1}}}, "train.heuristic.min_epoch_to_germinat: unknown key"),
        ({"train": {"epochs": 3}}, "train.epochs: set by the PPO run: use episode_length"),
        ({"train": {"controller": "random"}}, "train.controller: set by the PPO run"),
        ({"train": {"task": "mnist1d"}}, "train.task: set by the PPO run: use task (here 'mnist1d-blind'), got"),
        ({"reward": {"pbrs_gamma": 0.99}}, "reward.pbrs_gamma: expected ppo.gamma (0.995), got 0.99"),
        ({"envs": 1}, "ppo.n_minibatches: expected a value <= envs (1), got 2"),
    ],
)
def test_every_problem_is_named_by_its_full_key_path(data: dict[str, Any], message: str) -> None:
    assert message in problems(data)


def test_problems_in_several_tables_are_reported_together() -> None:
    text = problems({"reward": {"rent_weight": "x"}, "train": {"threads": 0}, "policy": {"lstm_hidden": "8"}})
    assert text.count(";") == 2
    assert {part.split(":")[0] for part in text.split("; ")} == {
        "reward.rent_weight", "train.threads", "policy.lstm_hidden"
    }


def test_the_train_table_runs_the_runs_task_and_leaves_the_episode_keys_to_the_run() -> None:
    assert set(RUN_OWNED_TRAIN_KEYS) == ENV_OWNED_KEYS
    config = PPORunConfig(task="mnist1d", train={"max_batches_per_epoch": 3})
    assert config.train.task == "mnist1d" and config.train.max_batches_per_epoch == 3
    assert PPORunConfig().train == TrainConfig(task="mnist1d-blind")
    # A TrainConfig object works as well as a table; its default task is replaced by the run's.
    typed = PPORunConfig(train=TrainConfig(max_batches_per_epoch=3))
    assert typed.train.task == "mnist1d-blind" and typed == PPORunConfig(train={"max_batches_per_epoch": 3})
    # Every environment gets this very object: nothing validates it again.
    assert config.env_config().train is config.train


st_run = st.fixed_dictionaries(
    {
        "envs": st.integers(1, 64),
        "seed": st.integers(0, 2**31),
        "train": st.fixed_dictionaries(
            {},
            optional={
                "max_batches_per_epoch": st.one_of(st.none(), st.integers(1, 100)),
                "host_lr": st.floats(1e-6, 1.0),
                "blueprints": st.lists(st.sampled_from(["norm", "conv_light", "attention"]), unique=True),
                "gates": st.fixed_dictionaries(
                    {}, optional={"permissive": st.booleans(), "g2_min_epochs": st.integers(0, 9)}
                ),
                "host_overrides": st.dictionaries(st.sampled_from(["widths", "depth"]), st.integers(1, 64)),
            },
        ),
        "ppo": st.fixed_dictionaries(
            {"n_minibatches": st.just(1)},
            optional={"lr": st.floats(1e-7, 1.0), "target_kl": st.one_of(st.none(), st.floats(1e-4, 1.0))},
        ),
        "reward": st.fixed_dictionaries(
            {}, optional={"rent_weight": st.floats(-10, 10), "mode": st.sampled_from(["shaped", "sparse"])}
        ),
        "imitation": st.fixed_dictionaries({}, optional={"rounds": st.integers(0, 9)}),
    }
)


@settings(max_examples=60, deadline=None)
@given(st_run)
def test_the_recorded_tree_validates_back_to_the_same_config(data: dict[str, Any]) -> None:
    config = PPORunConfig.model_validate(data)
    recorded = json.loads(json.dumps(config.model_dump(mode="json")))  # as agent.pt and --show-config hold it
    again = PPORunConfig.model_validate(recorded)
    assert again == config and again.train == config.train
    assert again.model_dump(mode="json") == recorded
    assert recorded["train"] == json.loads(json.dumps(data["train"]))  # the keys that were set, as set


@pytest.mark.parametrize("folder", [BENCH, BENCH / "rent3"], ids=["quality", "rent3"])
def test_the_benchmark_config_files_still_build_the_configs_their_agents_recorded(
    folder: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["ppo", *QUALITY_FLAGS, "--config", str(folder / "quality.toml"), "--show-config"]
    assert cli_main.main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    agent = load_agent(folder / "agent.pt")
    assert shown == agent.meta.hyperparameters
    config = PPORunConfig.model_validate(shown)
    assert PPORunConfig.model_validate(agent.meta.hyperparameters) == config
    check_resume(agent, config)  # the committed agent can be resumed with its config file
    changed = PPORunConfig.model_validate({**shown, "ppo": {**shown["ppo"], "lr": 0.001}})
    with pytest.raises(AgentMismatchError, match=r"differ: ppo\.lr: saved 0\.0003, now 0\.001$"):
        check_resume(agent, changed)


def test_show_config_prints_every_setting_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli_main.main(["ppo", "--envs", "4", "--reward", "sparse", "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == PPORunConfig(envs=4, reward={"mode": "sparse"}).model_dump(mode="json")
    assert set(shown) == set(PPORunConfig.model_fields)
    assert list(tmp_path.iterdir()) == []


def test_a_typo_in_the_train_table_fails_at_once_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nmax_batches_per_epok = 20\n[reward]\nrent_weight = 'high'\n", encoding="utf-8")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "esper", "ppo", "--config", str(bad), "--out", str(out), "--workers", "0"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"esper ppo: {bad}: ")
    assert "train.max_batches_per_epok: unknown key" in done.stderr
    assert "reward.rent_weight: expected float, got str" in done.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


@pytest.mark.slow
def test_the_train_table_is_validated_once_and_every_episode_runs_that_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[PPORunConfig] = []
    validate_run = PPORunConfig.model_validate

    def counted_run(data: Any, **options: Any) -> PPORunConfig:
        built.append(validate_run(data, **options))
        return built[-1]

    train_validations: list[str] = []
    validate_train, init_train = TrainConfig.model_validate, TrainConfig.__init__

    def counted_validate(data: Any, **options: Any) -> TrainConfig:
        train_validations.append("model_validate")
        return validate_train(data, **options)

    def counted_init(self: TrainConfig, **data: Any) -> None:
        train_validations.append("__init__")
        init_train(self, **data)

    episodes: list[TrainConfig] = []

    class RecordedRun(GrowthRun):
        def __init__(self, config: TrainConfig, **options: Any) -> None:
            episodes.append(config)
            super().__init__(config, **options)

    monkeypatch.setattr(PPORunConfig, "model_validate", counted_run)
    monkeypatch.setattr(TrainConfig, "model_validate", counted_validate)
    monkeypatch.setattr(TrainConfig, "__init__", counted_init)
    monkeypatch.setattr(environment, "GrowthRun", RecordedRun)
    config_file = tmp_path / "run.toml"
    config_file.write_text(
        "[train]\nmax_batches_per_epoch = 1\n[imitation]\nrounds = 1\npasses = 1\n"
        "[policy]\nhidden = 8\nlstm_hidden = 8\nhead_hidden = 8\n",
        encoding="utf-8",
    )
    code = cli_main.main(["ppo", "--envs", "2", "--rounds", "1", "--episode-length", "2", "--workers", "0",
                          "--seed", "5", "--config", str(config_file), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    assert len(built) == 1 and train_validations == []
    run_train = built[0].train
    # 2 envs, each: the first reset (to read the layout), the demonstration episode and its
    # auto-reset, the reset to round 0 and the auto-reset after it.
    assert len(episodes) == 10
    for episode in episodes:
        assert episode.gates is run_train.gates and episode.governor is run_train.governor  # copies, not re-validations
        assert episode.epochs == 2
        assert episode.model_copy(update={"seed": 0, "epochs": None}) == run_train
    assert sorted({episode.seed for episode in episodes}) == sorted(
        {5 + 0 * 2 + k for k in (0, 1)} | {5 + 1 * 2 + k for k in (0, 1)}
        | {5 + 1_000_000 * 2 + k for k in (0, 1)} | {5 + 1_000_001 * 2 + k for k in (0, 1)}
    )
    # The agent records the tree, and the record validates back to the run's config.
    monkeypatch.setattr(PPORunConfig, "model_validate", validate_run)
    agent = load_agent(tmp_path / "out" / training.AGENT_NAME)
    assert PPORunConfig.model_validate(agent.meta.hyperparameters) == built[0]


ROW = re.compile(r"^\| `([a-z0-9_.]+)` \| `(.+?)` \|", re.MULTILINE)


def _by_path(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_by_path(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_the_documentation_lists_every_key_with_its_default() -> None:
    documented = dict(ROW.findall((ROOT / "docs" / "ppo-config.md").read_text(encoding="utf-8")))
    defaults = {key: value for key, value in _by_path(PPORunConfig().model_dump(mode="json")).items() if key != "train"}
    assert {key: json.loads(value) for key, value in documented.items() if not key.startswith("train.")} == defaults
    settable = set(TrainConfig.model_fields) - ENV_OWNED_KEYS - {"task"}
    train_rows = {key.split(".")[1] for key in documented if key.startswith("train.")}
    assert train_rows == settable
    train_defaults = _by_path(TrainConfig().model_dump(mode="json"), "train.")
    for key, value in documented.items():
        if key.startswith("train."):
            assert train_defaults[key] == json.loads(value), key
