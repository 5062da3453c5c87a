"""The collective measurement context.

Forcing a seed's alpha on one rank would make its forward differ from the other
ranks' and desynchronise them, so `SeedSlot.force_alpha` is refused under
torch.distributed — except inside this context, which every rank enters at the
same moment to evaluate the same alpha settings on its own shard before the
results are all-reduced (counterfactual measurement).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_depth = 0


def in_collective_measurement() -> bool:
    return _depth > 0


@contextmanager
def collective_measurement() -> Iterator[None]:
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
