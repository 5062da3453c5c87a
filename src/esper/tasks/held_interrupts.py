"""Hold Ctrl-C over a block of third-party code that would swallow it, then deliver it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Run the block with SIGINT recorded instead of raised; deliver it once the block is done.

    Some compiled extensions clear every exception raised while they initialise (scipy's
    Cython modules do so around their registrations with `collections.abc`). A Ctrl-C that
    arrives while such a module loads is then raised inside that cleanup and lost, and the
    command runs on as if nothing had happened. Holding the signal over the import keeps it:
    the original handler receives it after the block, so Ctrl-C still stops the command.
    Signal handlers belong to the main thread; elsewhere, and where SIGINT is ignored or
    handled outside Python, the block runs unchanged.
    """
    current = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or current in (signal.SIG_IGN, None):
        yield
        return
    received: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGINT, record)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        # Through the restored handler: KeyboardInterrupt by default, nothing if ignored.
        signal.raise_signal(signal.SIGINT)
