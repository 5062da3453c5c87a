"""What a benchmark ran on: CPU, cores, torch and its threads, Python, OS.

Benchmark ratios mean little without the machine beside them, so every
results file carries this description.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

__all__ = ["cpu_model", "describe_machine"]

CPUINFO = Path("/proc/cpuinfo")
# x86 names the CPU under "model name"; ARM and others use one of the later keys.
_MODEL_KEYS = ("model name", "Hardware", "Processor", "cpu model")


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's name from /proc/cpuinfo, else what `platform` knows, else "unknown"."""
    if cpuinfo.is_file():
        fields: dict[str, str] = {}
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition(":")
            key = key.strip()
            # The first processor's entry is enough: keep the first value per key.
            if sep and key not in fields:
                fields[key] = value.strip()
        for key in _MODEL_KEYS:
            if fields.get(key):  # absent or empty: try the next key
                return fields[key]
    fallback = platform.processor()
    return fallback if fallback else "unknown"


def _usable_cores() -> int | None:
    # sched_getaffinity is Linux-only; elsewhere the usable count is not known.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return None


def describe_machine() -> dict[str, Any]:
    """Primitives only, ready for JSON. Call after the benchmark fixed the thread count."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "architecture": platform.machine(),
        "torch_version": str(torch.__version__),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "os": platform.platform(),
        # The C library's malloc shapes timings of large tensors (see esper.bench.timing).
        "libc": " ".join(part for part in platform.libc_ver() if part) or "unknown",
        # Other work on the machine makes timings noisy; record how busy it was.
        "load_average_1_5_15_min": None if load is None else [round(v, 2) for v in load],
    }
