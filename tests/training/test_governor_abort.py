"""A loss that is non-finite from the first epoch: rollbacks restore the initial weights, then the run aborts loudly."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from esper.cli.main import main
from esper.cli.train_cmd import EXIT_GOVERNOR_ABORT
from esper.telemetry import events as ev
from esper.telemetry.replay import read_events
from esper.training.config import TrainConfig
from esper.training.growth_run import GrowthRun
from esper.training.run_io import load_run

# An absurd host learning rate: the second batch of the first epoch already has an infinite loss.
BROKEN = "max_batches_per_epoch = 2\nhost_lr = 1e30\n"
EPOCHS = 8


def _reject_constant(name: str) -> Any:
    raise ValueError(f"bare {name} is not JSON")


@pytest.fixture(scope="module")
def aborted(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    root = tmp_path_factory.mktemp("abort")
    config = root / "broken.toml"
    config.write_text(BROKEN)
    out = root / "run"
    # A module fixture cannot use capsys: capture the CLI's output by redirecting it.
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(
            ["train", "--epochs", str(EPOCHS), "--config", str(config), "--out", str(out), "--no-progress"]
        )
    return code, err.getvalue(), out


def test_an_aborted_run_exits_non_zero_and_says_why(aborted: tuple[int, str, Path]) -> None:
    code, err, out = aborted
    assert code == EXIT_GOVERNOR_ABORT == 3
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "governor abort" in lines[0] and "non-finite training loss" in lines[0] and str(out) in lines[0]
    summary = json.loads((out / "summary.json").read_text(), parse_constant=_reject_constant)
    assert summary["finish_reason"].startswith("governor abort: stopped after 4 rollbacks (limit 3)")
    assert summary["rollbacks"] == 4


def test_rollbacks_restore_the_initial_weights(aborted: tuple[int, str, Path]) -> None:
    _, _, out = aborted
    events = read_events(out / "events.jsonl")
    actions = [e for e in events if isinstance(e, ev.GovernorAction)]
    assert [a.action for a in actions] == ["rollback", "rollback", "rollback", "abort"]
    assert [a.epoch for a in actions] == [1, 2, 3, 4]  # stopped at epoch 4 of 8
    metrics = [e for e in events if isinstance(e, ev.EpochMetrics)]
    assert all(math.isnan(m.train_loss) for m in metrics)
    # Each rolled-back epoch validates the same restored weights: the untrained host.
    assert len({m.val_loss for m in metrics}) == 1 and all(math.isfinite(m.val_loss) for m in metrics)
    fresh = GrowthRun(TrainConfig(task="mnist1d", epochs=EPOCHS, max_batches_per_epoch=2, host_lr=1e30))
    saved = load_run(out / "checkpoint.pt").model.state_dict()
    for name, tensor in fresh.model.state_dict().items():
        assert torch.equal(saved[name], tensor), name


def test_the_abort_is_committed_with_its_checkpoint(aborted: tuple[int, str, Path]) -> None:
    _, _, out = aborted
    saved = load_run(out / "checkpoint.pt")
    assert saved.events is not None
    data = (out / "events.jsonl").read_bytes()
    committed, rest = data[: saved.events.bytes], data[saved.events.bytes :]
    last_two = [json.loads(line) for line in committed.splitlines()[-2:]]
    assert last_two[0]["action"] == "abort"
    # The run's final line is committed too: nothing comes after the commit point.
    assert last_two[1]["type"] == "run_finished" and rest == b""
    assert saved.run_state["epoch"] == 4
    assert saved.run_state["governor"]["rollbacks"] == 4


def test_events_and_summary_of_a_non_finite_run_are_strict_json(aborted: tuple[int, str, Path]) -> None:
    _, _, out = aborted
    lines = (out / "events.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=_reject_constant) for line in lines]
    nan_losses = [r["train_loss"] for r in records if r["type"] == "epoch_metrics"]
    assert nan_losses == ["NaN", "NaN", "NaN"]
    json.loads((out / "summary.json").read_text(), parse_constant=_reject_constant)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_accuracy"] == "NaN"
    assert (out / "report.png").is_file()  # the report reads the non-finite metrics back
