"""Without --out, a second run gets a new directory instead of a refusal (./run.sh twice works)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli.conftest import snapshot

from esper.cli.main import main


def test_default_out_never_replaces_a_run(tmp_path: Path, tiny_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["train", "--config", str(tiny_config), "--epochs", "1", "--no-progress"]
    assert main(args) == 0
    first = tmp_path / "runs" / "mnist1d-heuristic-seed0"
    before = snapshot(first)
    assert main(args) == 0
    second = tmp_path / "runs" / "mnist1d-heuristic-seed0-2"
    assert (second / "summary.json").is_file()
    assert snapshot(first) == before
    # --overwrite names the unsuffixed default on purpose.
    assert main([*args, "--overwrite"]) == 0
    assert not (tmp_path / "runs" / "mnist1d-heuristic-seed0-3").exists()
