"""Atomic writes: the target is the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from esper.checkpoints.atomic import atomic_torch_save, atomic_write, atomic_write_bytes


def _siblings(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.parent.iterdir())


def test_write_bytes_creates_then_replaces(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.bin"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert _siblings(target) == ["ckpt.bin"]  # no temp file left behind


def test_temp_file_is_hidden_next_to_target(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    seen: list[str] = []

    def write(handle: object) -> None:
        seen.extend(_siblings(target))
        handle.write(b"x")  # type: ignore[attr-defined]

    atomic_write(target, write)
    assert len(seen) == 1
    assert seen[0].startswith(".model.pt.") and seen[0].endswith(".tmp")
    assert _siblings(target) == ["model.pt"]


def test_failure_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    atomic_torch_save({"w": torch.ones(3)}, target)

    class Unpicklable:
        def __reduce__(self) -> tuple[object, ...]:
            raise RuntimeError("refusing to pickle")

    with pytest.raises(RuntimeError, match="refusing to pickle"):
        atomic_torch_save({"bad": Unpicklable()}, target)
    assert _siblings(target) == ["ckpt.pt"]
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))


def test_torch_save_round_trip_and_file_mode(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    atomic_torch_save({"w": torch.arange(4.0)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(4.0))
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # like a normally created file, not 0600


def test_bad_arguments_are_explained(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_bytes(tmp_path / "missing_dir" / "x.bin", b"x")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        atomic_write_bytes(tmp_path, b"x")
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        atomic_write_bytes(tmp_path / "x.bin", "text")  # type: ignore[arg-type]


# The writer stalls after 1 MiB has reached the temporary file, says "writing", and waits to be killed.
_STALLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import torch
    from esper.checkpoints import atomic

    real_save = torch.save

    class Stall:
        def __init__(self, handle):
            self.handle, self.written = handle, 0
        def write(self, data):
            count = self.handle.write(data)
            self.written += len(data)
            if self.written > 1 << 20:
                self.handle.flush()
                print("writing", flush=True)
                time.sleep(600)
            return count
        def flush(self):
            self.handle.flush()

    torch.save = lambda obj, handle: real_save(obj, Stall(handle))
    atomic.atomic_torch_save({"new": torch.ones(4_000_000)}, sys.argv[1])
    print("finished", flush=True)
    """
)


def test_sigkill_mid_write_leaves_previous_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    atomic_torch_save({"old": torch.arange(10.0)}, target)
    before = target.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", _STALLED_WRITER, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline().strip() if ready else ""  # type: ignore[union-attr]
        assert line == "writing", f"writer did not stall as planned: {line!r} / {proc.stderr.read()!r}"  # type: ignore[union-attr]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == before
    assert torch.equal(torch.load(target, weights_only=True)["old"], torch.arange(10.0))
    leftovers = [name for name in _siblings(target) if name != "ckpt.pt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".ckpt.pt.")  # the killed writer's partial temp
    assert (tmp_path / leftovers[0]).stat().st_size > 1 << 20  # it really was killed mid-write
