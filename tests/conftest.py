"""Shared test setup.

One torch thread per test process: the suite runs 2 workers on 2 cores, and
tiny ops get much slower when threads oversubscribe the machine.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
