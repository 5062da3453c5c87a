"""What the morphogenetic model needs from a host network.

The model runs a host as::

    h = host.stem(x)
    for i, segment in enumerate(host.segments):
        h = slot_i(segment(h))          # slot i sits after segment i
    out = host.head(h)

The protocol says nothing about how a host is built, so an adapter around an
arbitrary user model can satisfy it as well as our own CNN / GPT hosts.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor, nn

from esper.contracts.shapes import SlotShape


@runtime_checkable
class HostProtocol(Protocol):
    """A network with slots: `stem`, then `segments` each followed by a slot, then `head`.

    Implementations are `nn.Module`s; `forward(x)` is the same chain with no
    slots (the bare host).
    """

    # The registered name: `esper.hosts.build_host(kind, config())` rebuilds the host.
    kind: ClassVar[str]
    segments: nn.ModuleList

    def stem(self, x: Tensor) -> Tensor:
        """Map the raw input to the features entering segment 0."""
        ...

    def head(self, h: Tensor) -> Tensor:
        """Map the features leaving the last slot to the output."""
        ...

    def slot_ids(self) -> list[str]:
        """Slot ids in row-major order (`r0c0`, `r0c1`, ...); one per segment."""
        ...

    def slot_shape(self, slot_id: str) -> SlotShape:
        """Feature layout at `slot_id`; an unknown id raises ValueError naming the valid ids."""
        ...

    def config(self) -> dict[str, Any]:
        """Constructor arguments as primitives (loadable with `torch.load(weights_only=True)`)."""
        ...
