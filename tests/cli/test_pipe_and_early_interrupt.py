"""A closed pipe ends a command quietly; Ctrl-C before esper ppo saved anything says there is nothing to resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback(tmp_path: Path) -> None:
    # `esper ppo --show-config | head -c 0`: the reader is gone before the command writes a byte.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "esper", "ppo", "--show-config"],
            cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 128 + signal.SIGPIPE, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.2, 0.4])
def test_ctrl_c_before_the_first_round_says_there_is_nothing_to_resume(tmp_path: Path, delay: float) -> None:
    # Three instants of the demonstrations' start. About 0.3-0.5 s after the events file
    # appears mnist1d loads scipy, where a Ctrl-C used to be lost (scipy's extensions clear
    # exceptions while they load) or to end `python -m esper` by SIGINT after the command had
    # returned 130. The window is narrow and moves with the machine's speed, so this samples
    # it; tests/cli/test_module_exit_status.py and tests/test_held_interrupts.py check
    # the two causes deterministically.
    out = tmp_path / "agent"
    child = subprocess.Popen(
        [sys.executable, "-m", "esper", "ppo", "--task", "mnist1d", "--envs", "2", "--rounds", "1",
         "--episode-length", "25", "--workers", "0", "--imitate", "4", "--out", str(out), "--no-progress"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        # The demonstrations have started once the events file exists; the first agent.pt is minutes away.
        while not (out / "events.jsonl").exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "esper ppo did not start its demonstrations"
            time.sleep(0.05)
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 130, stderr
    assert not (out / "agent.pt").exists()
    assert "nothing to resume; run the same command again" in stderr
    assert "--resume" not in stderr and "Traceback" not in stderr, stderr
