"""OS errors: one line naming the path and the cause, exit 2, no traceback, earlier files intact."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.cli.conftest import RUN_FILES, one_line, snapshot

from esper.cli.main import main

ESPER = [sys.executable, "-m", "esper"]


def test_out_that_is_a_file(tmp_path: Path, tiny_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out, message in ((afile, f"--out {afile}: is a file"), (afile / "sub", f"{afile} is a file, not a dir")):
        assert main(["train", "--config", str(tiny_config), "--out", str(out), "--no-progress"]) == 2
        assert message in one_line(capsys.readouterr().err)
    assert afile.read_text() == "mine"


def test_config_path_that_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", str(tmp_path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert f"config file {tmp_path}: is a directory" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_config_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.toml"
    config.write_bytes(b"epochs = 2\n# caf\xe9\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert f"config file {config}: not UTF-8 text (byte 16" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def _without_write_permission() -> tuple[list[str], str]:
    """A command prefix under which a 0o500 directory cannot be written, and why it works.

    root ignores file modes (CAP_DAC_OVERRIDE), so as root the command runs with that
    capability dropped (setpriv, util-linux): the kernel then refuses the write for real.
    """
    if os.geteuid() != 0:
        return [], "not root: file modes apply"
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot take away root's right to write a 0o500 directory")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"], "root without CAP_DAC_OVERRIDE"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fresh", "resume"])
def test_read_only_run_directory(finished_run: Path, tmp_path: Path, tiny_config: Path, mode: str) -> None:
    prefix, _why = _without_write_permission()
    before = snapshot(finished_run)
    finished_run.chmod(0o500)
    try:
        if mode == "fresh":
            argv = ["train", "--config", str(tiny_config), "--out", str(finished_run / "sub"), "--no-progress"]
        else:
            argv = ["train", "--resume", str(finished_run / "checkpoint.pt"), "--epochs", "3", "--no-progress"]
        done = subprocess.run([*prefix, *ESPER, *argv], capture_output=True, text=True, timeout=120)
    finally:
        finished_run.chmod(0o755)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert f"cannot write in {finished_run}: Permission denied" in line
    assert snapshot(finished_run) == before


def _file_size_limit(limit: int):
    def apply() -> None:
        # Past the limit a write fails with EFBIG (File too large), as a full disk fails with ENOSPC;
        # SIGXFSZ, which would kill the process instead, is ignored so the error reaches Python.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_a_write_that_fails_mid_checkpoint_is_one_line_and_keeps_the_earlier_run(finished_run: Path) -> None:
    before = snapshot(finished_run)
    assert len(before["checkpoint.pt"]) > 100_000
    done = subprocess.run(
        [*ESPER, "train", "--resume", str(finished_run / "checkpoint.pt"), "--epochs", "3", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_file_size_limit(100_000),
    )
    assert done.returncode == 2
    assert one_line(done.stderr) == f"esper train: {finished_run}: writing the run failed: File too large"
    after = snapshot(finished_run)
    assert sorted(after) == sorted(RUN_FILES)  # no temporary file left behind
    for name in ("checkpoint.pt", "summary.json", "report.png"):
        assert after[name] == before[name], name
    assert after["events.jsonl"].startswith(before["events.jsonl"])


def test_disk_full_when_the_checkpoint_is_synced(
    finished_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC from fsync (delayed allocation reports a full disk there) leaves the old checkpoint."""
    before = snapshot(finished_run)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert main(["train", "--resume", str(finished_run / "checkpoint.pt"), "--epochs", "3", "--no-progress"]) == 2
    assert one_line(capsys.readouterr().err).endswith("writing the run failed: No space left on device")
    assert snapshot(finished_run)["checkpoint.pt"] == before["checkpoint.pt"]
    assert sorted(snapshot(finished_run)) == sorted(RUN_FILES)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (lambda run, cfg: ["--config", str(cfg), "--out", str(run / "summary.json")], "is a file"),
        (lambda run, cfg: ["--config", str(cfg), "--out", str(run)], "already holds a run"),
        (lambda run, cfg: ["--device", "cuda", "--out", str(run), "--overwrite"], "CUDA"),
    ],
    ids=["out-file", "existing-run", "cuda"],
)
@pytest.mark.slow
def test_as_a_command_exit_2_and_one_line(finished_run: Path, tiny_config: Path, argv, message: str) -> None:
    if message == "CUDA":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    before = snapshot(finished_run)
    done = subprocess.run(
        [*ESPER, "train", *argv(finished_run, tiny_config), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith("esper train: ") and message in line
    assert done.stdout == ""
    assert snapshot(finished_run) == before
