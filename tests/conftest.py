"""Shared test setup: one torch thread per test worker (the suite runs 2 workers on 2 cores)."""

from __future__ import annotations

import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
