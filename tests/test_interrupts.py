"""A Ctrl-C whose KeyboardInterrupt third-party code swallowed still stops the command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from esper.interrupts import ctrl_c_remembered, raise_if_interrupted


def _swallowed_ctrl_c() -> None:
    # What Cython-built modules do while they initialise: clear any exception.
    try:
        os.kill(os.getpid(), signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # the first one is surely handled by now
    except BaseException:
        pass


def test_a_swallowed_ctrl_c_is_raised_again_when_asked() -> None:
    previous = signal.getsignal(signal.SIGINT)
    with ctrl_c_remembered():
        raise_if_interrupted()  # nothing pressed yet: nothing raised
        _swallowed_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
    assert signal.getsignal(signal.SIGINT) is previous
    raise_if_interrupted()  # forgotten once the command is over


def test_an_ignored_or_custom_sigint_is_left_alone() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with ctrl_c_remembered():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            raise_if_interrupted()
    finally:
        signal.signal(signal.SIGINT, previous)


# Loaded by the child interpreter: the first training batch's loss swallows a real Ctrl-C, as a
# Cython module being imported at that instant would.
_SWALLOW_ONCE = """
import os, signal
import esper.training.epoch_pass as epoch_pass

_loss = epoch_pass.loss_and_correct
_done = []

def swallowing(*args, **kwargs):
    if not _done:
        _done.append(True)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        except BaseException:
            pass
    return _loss(*args, **kwargs)

epoch_pass.loss_and_correct = swallowing
"""


@pytest.mark.slow  # a fresh interpreter and the start of a run
def test_esper_train_stops_after_a_ctrl_c_that_was_swallowed(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(_SWALLOW_ONCE, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    result = subprocess.run(
        [sys.executable, "-m", "esper", "train", "--task", "mnist1d", "--epochs", "50", "--out", "run",
         "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # Without the remembered Ctrl-C the run trained all 50 epochs and exited 0.
    assert result.returncode == 130, result.stderr
    assert "interrupted" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
