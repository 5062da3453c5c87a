"""A Ctrl-C that lands in code which swallows every exception is held and delivered afterwards."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from esper.interrupts import interrupts_held


def _swallowing_block() -> None:
    # What scipy's compiled extensions do while they initialise: clear any exception.
    try:
        os.kill(os.getpid(), signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # the signal is surely handled by now
    except BaseException:
        pass


def test_a_swallowed_ctrl_c_still_interrupts_after_the_block() -> None:
    handler = signal.getsignal(signal.SIGINT)
    after_block = False
    with pytest.raises(KeyboardInterrupt), interrupts_held():
        _swallowing_block()
        after_block = True
    assert after_block
    assert signal.getsignal(signal.SIGINT) is handler


def test_without_ctrl_c_the_block_runs_and_the_handler_is_restored() -> None:
    handler = signal.getsignal(signal.SIGINT)
    with interrupts_held():
        assert signal.getsignal(signal.SIGINT) is not handler
    assert signal.getsignal(signal.SIGINT) is handler


def test_an_ignored_sigint_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_held():
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_the_block_runs_unchanged() -> None:
    seen: list[object] = []

    def body() -> None:
        with interrupts_held():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(timeout=10)
    assert seen == [signal.getsignal(signal.SIGINT)]
