"""Shared setup for the command-line tests: one tiny finished run, copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from esper.cli.main import main

TINY = "max_batches_per_epoch = 2\n"
RUN_FILES = ("events.jsonl", "checkpoint.pt", "summary.json", "report.png")


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` by relative path, with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def one_line(text: str) -> str:
    """The single line a failing command writes; fails the test when there are more or none."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def _finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    code = main(["train", "--config", str(tiny_config), "--epochs", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


@pytest.fixture
def finished_run(_finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of a finished 2-epoch mnist1d run (seed 0, heuristic, tiny.toml)."""
    copy = tmp_path / "run"
    shutil.copytree(_finished_run, copy)
    return copy
