"""`esper train` checks every input before the run directory changes; a run is never replaced silently."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tests.cli.conftest import RUN_FILES, TINY, one_line, snapshot

from esper.cli.main import main
from esper.training.config import SEED_MAX, ConfigError, TrainConfig, build_config
from esper.training.preflight import RunInputError, validate_run_inputs
from esper.training.trainer import run_training


def _config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extra.toml"
    path.write_text(TINY + text, encoding="utf-8")
    return path


def _garbage_agent(tmp_path: Path) -> Path:
    path = tmp_path / "agent.pt"
    path.write_bytes(b"not a checkpoint")
    return path


BAD_INPUTS = [
    pytest.param(lambda tmp: ["--controller", "nope"], "--controller: unknown 'nope'", id="unknown-controller"),
    pytest.param(lambda tmp: ["--controller", f"policy:{tmp / 'typo.pt'}"], "typo.pt: no such file", id="policy-typo"),
    pytest.param(
        lambda tmp: ["--controller", f"policy:{_garbage_agent(tmp)}"], "agent.pt", id="policy-not-an-agent"
    ),
    pytest.param(lambda tmp: ["--controller", f"policy:{tmp}"], "is a directory", id="policy-directory"),
    pytest.param(lambda tmp: ["--seed", str(2**32)], "seed: expected a value <= 4294967295", id="seed-overflow"),
    pytest.param(lambda tmp: ["--task", "no-such-task"], "unknown task 'no-such-task'", id="unknown-task"),
    pytest.param(
        lambda tmp: ["--config", str(_config_file(tmp, 'blueprints = ["nope"]\n'))],
        "unknown cnn blueprint(s) 'nope'",
        id="unknown-blueprint",
    ),
    pytest.param(lambda tmp: ["--data-dir", str(tmp / "nowhere")], "no such directory", id="data-dir"),
]


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize(("extra", "message"), BAD_INPUTS)
def test_a_bad_input_leaves_a_finished_run_untouched(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra, message: str, overwrite: bool
) -> None:
    before = snapshot(finished_run)
    argv = ["train", "--epochs", "2", "--out", str(finished_run), "--no-progress", *extra(tmp_path)]
    code = main([*argv, "--overwrite"] if overwrite else argv)
    assert code == 2
    assert message in one_line(capsys.readouterr().err)
    assert snapshot(finished_run) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line_and_touches_nothing(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(finished_run)
    code = main(["train", "--device", "cuda", "--out", str(finished_run), "--overwrite", "--no-progress"])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert "CUDA is not available" in line and f"torch {torch.__version__.split('+')[0]}" in line
    assert snapshot(finished_run) == before


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_telemetry_backend_whose_extra_is_missing_is_refused_first(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(finished_run)
    config = _config_file(tmp_path, 'telemetry = ["wandb"]\n')
    code = main(["train", "--config", str(config), "--out", str(finished_run), "--overwrite", "--no-progress"])
    assert code == 2
    assert "pip install 'esper[wandb]'" in one_line(capsys.readouterr().err)
    assert snapshot(finished_run) == before


def test_a_rerun_into_a_run_directory_is_refused_saying_how_to_resume_or_replace(
    finished_run: Path, tiny_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(finished_run)
    code = main(["train", "--config", str(tiny_config), "--epochs", "2", "--out", str(finished_run), "--no-progress"])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert f"esper train --resume {finished_run / 'checkpoint.pt'}" in line and "--overwrite" in line
    assert snapshot(finished_run) == before


@pytest.mark.parametrize("name", RUN_FILES)
def test_any_one_run_file_marks_a_directory_as_holding_a_run(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(RunInputError, match="already holds a run"):
        validate_run_inputs(TrainConfig(epochs=1), tmp_path)


def test_overwrite_replaces_only_esper_run_files(
    finished_run: Path, tiny_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (finished_run / "notes.txt").write_text("mine", encoding="utf-8")
    (finished_run / "tensorboard-by-hand").mkdir()
    old_summary = json.loads((finished_run / "summary.json").read_text())
    argv = ["--config", str(tiny_config), "--epochs", "2", "--seed", "7", "--out", str(finished_run)]
    assert main(["train", *argv, "--overwrite", "--no-progress"]) == 0
    summary = json.loads((finished_run / "summary.json").read_text())
    assert (old_summary["seed"], summary["seed"]) == (0, 7)
    events = [json.loads(line) for line in (finished_run / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events].count("run_started") == 1 and events[0]["seed"] == 7
    assert (finished_run / "notes.txt").read_text() == "mine" and (finished_run / "tensorboard-by-hand").is_dir()


def test_a_fresh_run_into_a_directory_of_other_files_keeps_them(tmp_path: Path, tiny_config: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["train", "--config", str(tiny_config), "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "summary.json").is_file()


def test_run_training_validates_before_the_directory_changes(finished_run: Path) -> None:
    """The library path, too: blueprints=["nope"] is refused before epoch 1, and the old run stays."""
    before = snapshot(finished_run)
    config = TrainConfig(epochs=2, max_batches_per_epoch=2, blueprints=["nope"])
    with pytest.raises(RunInputError, match="blueprint"):
        run_training(config, out_dir=finished_run, overwrite=True)
    with pytest.raises(RunInputError, match="already holds a run"):
        run_training(TrainConfig(epochs=2, max_batches_per_epoch=2), out_dir=finished_run)
    assert snapshot(finished_run) == before


def test_validation_writes_nothing_into_a_new_directory(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    resolved = validate_run_inputs(TrainConfig(epochs=3), out)
    assert resolved.total_epochs == 3 and not out.parent.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("seed", "ok"), [(0, True), (SEED_MAX, True), (SEED_MAX + 1, False), (-1, False)])
def test_the_seed_range_is_what_every_rng_accepts(seed: int, ok: bool) -> None:
    if ok:
        assert build_config({}, {"seed": seed}).seed == seed
    else:
        with pytest.raises(ConfigError, match="seed"):
            build_config({}, {"seed": seed})
