"""Building blocks that make a seed exactly the identity at birth.

A seed is grown into a network that is already training, so on the step it
appears it must not change the host's output at all. Two ways to get there:
a residual branch whose last affine layer starts at zero (`zero_init_`), or a
branch scaled by `tanh(scale)` with `scale` starting at zero (`ScaledNormSeed`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["NoopSeed", "ScaledNormSeed", "zero_init_"]


def zero_init_(layer: nn.Conv1d | nn.Conv2d | nn.Linear) -> None:
    """Zero a conv/linear layer's weight and bias, in place, so its output is exactly 0."""
    if not isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Linear):
        raise TypeError(f"zero_init_: expected nn.Conv1d, nn.Conv2d or nn.Linear, got {type(layer).__name__}")
    nn.init.zeros_(layer.weight)
    # Conv/Linear always define `bias`; it is None when built with bias=False.
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class NoopSeed(nn.Module):
    """No parameters: returns its input. The baseline every other seed is compared with."""

    def __init__(self) -> None:
        # Takes nothing: a width it would ignore would only mislead callers.
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x


class ScaledNormSeed(nn.Module):
    """`x + tanh(scale) * norm(x)` with a scalar `scale` starting at 0.

    tanh bounds the branch's weight to (-1, 1) so a large gradient on `scale`
    cannot blow the branch up; at scale=0 the output is exactly `x`.
    """

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        if not isinstance(norm, nn.Module):
            raise TypeError(f"ScaledNormSeed.norm: expected an nn.Module, got {type(norm).__name__}")
        self.norm = norm
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.tanh(self.scale) * self.norm(x)
