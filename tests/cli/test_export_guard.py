"""`esper export` never writes over its own input, and replaces another file only when asked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.cli.conftest import one_line, snapshot

from esper.cli.main import main


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink", "hardlink"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_export_onto_its_own_checkpoint_is_always_refused(
    finished_run: Path, capsys: pytest.CaptureFixture[str], spelling: str, overwrite: bool
) -> None:
    source = finished_run / "checkpoint.pt"
    out = {"same": source, "dot": finished_run / "." / "checkpoint.pt"}.get(spelling, finished_run / "alias.pt")
    if spelling == "symlink":
        out.symlink_to(source)
    elif spelling == "hardlink":
        os.link(source, out)
    before = snapshot(finished_run)
    code = main(["export", str(source), "--out", str(out), *(["--overwrite"] if overwrite else [])])
    assert code == 2
    assert "is the checkpoint being exported" in one_line(capsys.readouterr().err)
    assert snapshot(finished_run) == before


def test_an_existing_output_is_replaced_only_with_overwrite(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "grown.safetensors"
    out.write_bytes(b"precious")
    assert main(["export", str(finished_run / "checkpoint.pt"), "--out", str(out)]) == 2
    assert "--overwrite" in one_line(capsys.readouterr().err)
    assert out.read_bytes() == b"precious"
    assert main(["export", str(finished_run / "checkpoint.pt"), "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != b"precious"
