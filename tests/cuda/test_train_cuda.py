"""The CUDA path of `esper train`, run for real where a GPU exists (skipped elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from esper.cli.main import main
from esper.training.run_io import load_run

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available to this torch build or machine"),
]


def test_a_tiny_run_trains_on_cuda_and_extends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text("max_batches_per_epoch = 2\n", encoding="utf-8")
    out = tmp_path / "run"
    argv = ["train", "--device", "cuda", "--config", str(config), "--epochs", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["device"] == "cuda" and summary["epochs"] == 2
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert load_run(out / "checkpoint.pt").config["device"] == "cuda"
    assert main(["train", "--resume", str(out / "checkpoint.pt"), "--epochs", "3", "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 3
