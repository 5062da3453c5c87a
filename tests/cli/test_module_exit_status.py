"""`python -m esper` ends with the status the command returned, even after a handled Ctrl-C."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Loaded by the child interpreter before `-m esper` runs: the command handles a
# KeyboardInterrupt that left code run from a string, as libraries' imports sometimes do.
_HANDLED_INTERRUPT = """
import esper.cli.main

def main(argv=None):
    try:
        exec("raise KeyboardInterrupt")
    except KeyboardInterrupt:
        return 130
    return 0

esper.cli.main.main = main
"""


def test_a_handled_ctrl_c_ends_python_m_esper_with_130_not_by_sigint(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(_HANDLED_INTERRUPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    result = subprocess.run(
        [sys.executable, "-m", "esper"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    # Before the fix CPython remembered the caught interrupt and killed the process by SIGINT (-2).
    assert result.returncode == 130, result.stderr


def test_usage_errors_keep_their_status_under_python_m(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "esper", "no-such-command"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "invalid choice" in result.stderr


# Loaded by the child interpreter: a Ctrl-C lands in a command with nothing to save (`esper tasks`).
_INTERRUPT_IN_TASKS = """
import esper.cli.tasks_cmd

def interrupted(args):
    raise KeyboardInterrupt

esper.cli.tasks_cmd.handler = interrupted
"""


def test_a_ctrl_c_no_command_handles_is_one_line_and_130(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(_INTERRUPT_IN_TASKS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    for command in ([sys.executable, "-m", "esper"], [str(Path(sys.executable).with_name("esper"))]):
        result = subprocess.run(
            [*command, "tasks"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 130, result.stderr
        assert result.stderr == "esper: interrupted\n"


# Loaded by the child interpreter: importing the command line code is interrupted.
_INTERRUPT_WHILE_IMPORTING = """
import builtins

_import = builtins.__import__

def interrupted_import(name, *args, **kwargs):
    if name == "esper.cli.main":
        raise KeyboardInterrupt
    return _import(name, *args, **kwargs)

builtins.__import__ = interrupted_import
"""


def test_a_ctrl_c_while_python_m_esper_starts_is_one_line_and_130(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(_INTERRUPT_WHILE_IMPORTING)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    result = subprocess.run(
        [sys.executable, "-m", "esper", "tasks"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr == "esper: interrupted\n"
