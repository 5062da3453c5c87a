"""A Ctrl-C that third-party code swallowed still stops the command.

Two tools, one per situation. `ctrl_c_remembered` covers a whole command: the Ctrl-C is
remembered and the training loop raises it again at the next batch. `interrupts_held` covers a
known block of such code (an import): the Ctrl-C is held over the block and delivered as soon
as it ends, without waiting for a batch.

A KeyboardInterrupt is an exception like any other, and some third-party code clears every
exception raised in a stretch of its own: Cython-built extension modules (numpy.random's,
scipy's) do so while they initialise, so a Ctrl-C that lands while one of them is first
imported vanishes and the command runs on as if it had never been pressed. While a command
runs, its SIGINT handler raises KeyboardInterrupt as Python's default handler does and also
remembers that Ctrl-C was pressed; the training loop asks at every batch
(`raise_if_interrupted`) and raises it again if it was lost on the way. An interrupt that
propagated normally has ended the command before the question is asked.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_pressed = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _pressed
    _pressed = True
    raise KeyboardInterrupt


@contextmanager
def ctrl_c_remembered() -> Iterator[None]:
    """Run the block with the remembering SIGINT handler; the previous handler comes back after.

    Only where Python's default handler is in place, in the main thread (signal handlers
    belong to it): an ignored SIGINT, or one a caller handles, is left as it is.
    """
    global _pressed
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    _pressed = False
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _pressed = False


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed during the block (its exception may have been lost)."""
    if _pressed:
        raise KeyboardInterrupt


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
