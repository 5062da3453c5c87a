"""The one synchronisation point for lifecycle decisions.

Under an initialised `torch.distributed` process group every rank must take
the same lifecycle transition, even if local metrics differ (each rank sees
other data). Rank 0 decides and broadcasts; elsewhere this is the identity.
"""

from __future__ import annotations

from typing import TypeVar

from esper.distributed import group
from esper.distributed.collectives import broadcast_object

T = TypeVar("T")


def distributed_active() -> bool:
    # False inside esper.distributed's local_scope (a rank's own independent runs, e.g. PPO environments).
    return group.active()


def sync_decision(decision: T) -> T:
    """Return rank 0's `decision` on every rank (a picklable primitive or dataclass)."""
    if not distributed_active():
        return decision
    return broadcast_object(decision)  # on the backend's collective device (NCCL: the rank's GPU)
