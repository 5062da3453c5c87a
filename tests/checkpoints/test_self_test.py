"""`esper audit --self-test`: every checkpoint kind, audited and loaded; exit 0 only if all pass."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path

import pytest
import torch

from esper.checkpoints import self_test
from esper.cli import audit_cmd
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.stages import SeedStage


class _Colour(IntEnum):
    RED = 1


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    assert torch.get_num_threads() == threads  # the self-test restores what it changed


def test_self_test_passes_and_covers_every_stage_blueprint_and_algorithm(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert self_test.run_self_test(json_output=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True
    files = report["files"]
    assert all(f["passed"] and f["weights_only"] and f["audit"]["status"] == "compatible" for f in files)
    assert all(f["audit"]["issues"] == [] for f in files)
    assert [f["type"] for f in files].count("Agent") == 1
    for host in self_test.TINY_HOSTS:
        covered = {(f["stage"], f["algorithm"]) for f in files if f["type"] == f"Model ({host.label})"}
        expected = {(SeedStage.DORMANT.name, "-")} | {
            (stage.name, algorithm.name)
            for stage in self_test.STAGES
            if stage != SeedStage.DORMANT
            for algorithm in AlphaAlgorithm
        }
        assert covered == expected
    assert all(row["passed"] and row["weights_only"] and row["issues"] == 0 for row in report["summary"])


def test_blueprint_coverage_is_every_buildable_blueprint() -> None:
    for host in self_test.TINY_HOSTS:
        model = self_test.staged_model(host, SeedStage.FOSSILIZED, AlphaAlgorithm.GATE)
        blueprints = [slot.state.blueprint for slot in model.slots()]  # type: ignore[union-attr]
        assert blueprints == self_test.available_blueprints(host)
    assert len(self_test.available_blueprints(self_test.TINY_HOSTS[0])) == 8  # every CNN blueprint


def test_table_output_through_esper_audit_self_test(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(self_test, "TINY_HOSTS", self_test.TINY_HOSTS[:1])
    monkeypatch.setattr(self_test, "STAGES", (SeedStage.DORMANT, SeedStage.BLENDING))
    parser = argparse.ArgumentParser(prog="esper")
    audit_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", "--self-test"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "weights_only=True" in out and "Issues found" in out
    assert "Model (cnn-1d)" in out and "BLENDING" in out and "Agent" in out
    assert "FAIL" not in out and "5/5 checkpoint files pass both checks" in out


def test_a_file_that_fails_makes_the_self_test_fail(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(self_test, "TINY_HOSTS", self_test.TINY_HOSTS[:1])
    monkeypatch.setattr(self_test, "STAGES", (SeedStage.TRAINING,))
    real_save = self_test.save_model

    def save_with_an_enum(model: object, path: Path) -> None:
        real_save(model, path)  # type: ignore[arg-type]
        if "multiply" in path.name:  # what the reference did: an enum in the payload
            data = torch.load(path, weights_only=True)
            data["stage"] = _Colour.RED
            torch.save(data, path)

    monkeypatch.setattr(self_test, "save_model", save_with_an_enum)
    assert self_test.run_self_test(json_output=True) == 1
    report = json.loads(capsys.readouterr().out)
    failed = [f for f in report["files"] if not f["passed"]]
    assert [(f["stage"], f["algorithm"]) for f in failed] == [("TRAINING", "MULTIPLY")]
    (bad,) = failed
    assert bad["weights_only"] is False and bad["audit"]["status"] == "incompatible"
    assert any("_Colour" in issue["qualified_name"] for issue in bad["audit"]["issues"])
    assert report["passed"] is False
