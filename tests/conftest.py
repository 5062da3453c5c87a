"""Shared test setup.

One torch thread per test process: the suite runs 2 workers on 2 cores, and
tiny ops get much slower when threads oversubscribe the machine.

Ctrl-C reaches the commands the tests start: a shell without job control
starts background commands (`./test.sh &` in a script) with SIGINT ignored,
and an ignored signal stays ignored in every child, so the tests that send a
real SIGINT to `esper` would see it do nothing. A handler, unlike SIG_IGN, is
reset to the default when a child starts, and Python then turns SIGINT into
KeyboardInterrupt as it does in a terminal.
"""

from __future__ import annotations

import signal

import torch

torch.set_num_threads(1)

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
