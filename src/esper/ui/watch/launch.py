"""Starting the dashboard: `esper watch`, and `--watch` on `esper train` / `esper ppo`.

`--watch` runs the same command, without `--watch`, in a child process writing
to the run directory, and shows the dashboard in this one, following the
child's events.jsonl exactly as `esper watch` would. A separate process keeps
the training independent of the terminal UI (its speed, its crashes, its
threads) and lets quitting the dashboard stop the training the way Ctrl-C does:
the child gets SIGINT, finishes its checkpoint and exits 130 with its resume
hint. The child's own output is held in temporary files and printed once the
dashboard has closed, so the final lines a user expects are not lost.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from esper.ui.watch.app import WatchApp

INSTALL_HINT = "the dashboard needs textual: install it with  pip install 'esper[ui]'"
STOP_GRACE_SECONDS = 120.0  # time the child gets to finish its checkpoint after SIGINT


def textual_available() -> bool:
    return importlib.util.find_spec("textual") is not None


def interactive() -> bool:
    """Whether a full-screen app can run: both ends of the terminal are a terminal."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def cannot_start(command: str) -> str | None:
    """Why the dashboard cannot start here (one line, prefixed with the command), or None."""
    if not textual_available():
        return f"{command}: {INSTALL_HINT}"
    if not interactive():
        return f"{command}: the dashboard needs an interactive terminal (stdin or stdout is not a terminal)"
    return None


def run_app(app: WatchApp) -> None:
    """Run the app full screen; tests replace this with a headless driver."""
    app.run()


def check_run_dir(run_dir: Path) -> str | None:
    """Why no run can ever appear at `run_dir` (a problem to report and exit 2), or None to follow/wait."""
    if run_dir.exists() and not run_dir.is_dir():
        return f"{run_dir} is a file, not a run directory (expected the --out directory of esper train or esper ppo)"
    for parent in run_dir.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{run_dir}: {parent} is a file, so no run directory can be created there"
            break
    return None


def watch(run_dir: Path, *, title: str | None = None, poll_seconds: float | None = None) -> None:
    from esper.ui.watch.app import POLL_SECONDS, WatchApp

    run_app(WatchApp(run_dir, title=title, poll_seconds=poll_seconds or POLL_SECONDS))


def child_argv(argv: list[str], out: Path) -> list[str]:
    """The same command without --watch, without a live display, writing to `out`."""
    # argparse also accepts an unambiguous abbreviation (--wat): drop those too.
    kept = [arg for arg in argv if not (len(arg) >= 3 and "--watch".startswith(arg))]
    return [*kept, "--no-progress", "--out", str(out)]


def run_with_dashboard(argv: list[str], out: Path, *, title: str) -> int:
    """Run `esper ARGV` (minus --watch) in a child process and the dashboard here, over `out`.

    Returns the child's exit status (130 when quitting the dashboard interrupted it).
    """
    from esper.ui.watch.app import WatchApp

    with tempfile.TemporaryFile("w+", encoding="utf-8") as out_file, tempfile.TemporaryFile(
        "w+", encoding="utf-8"
    ) as err_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "esper", *child_argv(argv, out)],
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
        )
        try:
            run_app(WatchApp(out, title=title, process=process))
        finally:
            code = _stop(process)
            _replay(out_file, sys.stdout)
            _replay(err_file, sys.stderr)
    if code < 0:  # killed by a signal: report it the way a shell does
        return 128 - code
    return code


def _stop(process: subprocess.Popen[bytes]) -> int:
    """Interrupt a child still training (as Ctrl-C would), give it time to checkpoint, then end it."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.terminate()
        return process.wait(timeout=30)


def _replay(source: TextIO, target: TextIO) -> None:
    source.flush()
    source.seek(0)
    shutil.copyfileobj(source, target)
    target.flush()
