"""CNN seed blueprints for 1-D `(B, C, L)` and 2-D `(B, C, H, W)` feature maps.

Every seed maps a tensor to one of the same shape and is exactly the identity
at birth: a residual branch whose last layer starts at zero, or a branch
scaled by `tanh(scale)` with `scale = 0`. Normalisation inside seeds is
GroupNorm, never BatchNorm: a seed must not depend on (or disturb) batch
statistics that the host owns, and GroupNorm behaves the same in train and
eval mode. Exact parameter counts come from `BlueprintRegistry.param_count`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from esper.blueprints.zero_init import NoopSeed, ScaledNormSeed, zero_init_
from esper.contracts.shapes import SlotShape

if TYPE_CHECKING:
    from esper.blueprints.registry import BlueprintRegistry

__all__ = [
    "MIN_CHANNELS_PER_GROUP",
    "BottleneckSeed",
    "ConvHeavySeed",
    "ConvLightSeed",
    "ConvSmallSeed",
    "DepthwiseSeed",
    "SqueezeExciteSeed",
    "group_norm",
    "group_norm_groups",
    "register",
]

# Fewer channels per group makes GroupNorm statistics noisy (Wu & He, 2018).
MIN_CHANNELS_PER_GROUP = 16
# Hidden widths never drop below this, so tiny hosts still get a usable seed.
_MIN_HIDDEN = 4


def group_norm_groups(channels: int) -> int:
    """Largest divisor g of `channels` with channels / g >= 16; 1 when channels < 32."""
    _check_channels(channels)
    best = 1
    for groups in range(1, channels // MIN_CHANNELS_PER_GROUP + 1):
        if channels % groups == 0:
            best = groups
    return best


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm over `channels` with the group count from `group_norm_groups`."""
    return nn.GroupNorm(group_norm_groups(channels), channels)


def _check_channels(channels: int) -> None:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
        raise ValueError(f"channels: expected a positive int, got {channels!r}")


def _conv_class(spatial_dims: int) -> type[nn.Conv1d] | type[nn.Conv2d]:
    if spatial_dims == 1:
        return nn.Conv1d
    if spatial_dims == 2:
        return nn.Conv2d
    raise ValueError(f"spatial_dims: expected 1 or 2, got {spatial_dims!r}")


class SqueezeExciteSeed(nn.Module):
    """Channel attention: `x * (1 + tanh(fc2(relu(fc1(mean over positions of x)))))`.

    Rescales whole channels from global context; it cannot move information
    between positions. fc2 starts at zero, so the gate starts at exactly 1.
    Works for any number of spatial dimensions (the pooling averages them all).
    """

    REDUCTION = 16

    def __init__(self, channels: int) -> None:
        super().__init__()
        _check_channels(channels)
        hidden = max(_MIN_HIDDEN, channels // self.REDUCTION)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        zero_init_(self.fc2)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=tuple(range(2, x.dim())))
        gate = torch.tanh(self.fc2(torch.relu(self.fc1(pooled))))
        # (B, C) -> (B, C, 1, ...) so the gate broadcasts over every position.
        gate = gate.reshape(*gate.shape, *([1] * (x.dim() - 2)))
        return x * (1 + gate)


class DepthwiseSeed(nn.Module):
    """`x + pointwise(relu(norm(depthwise_k3(x))))`: cheap local mixing.

    The depthwise conv sees neighbours but only within a channel; the 1x1
    pointwise conv (zero at birth) then mixes channels.
    """

    def __init__(self, channels: int, spatial_dims: int) -> None:
        super().__init__()
        _check_channels(channels)
        conv = _conv_class(spatial_dims)
        self.depthwise = conv(channels, channels, kernel_size=3, padding=1, groups=channels)
        self.norm = group_norm(channels)
        self.pointwise = conv(channels, channels, kernel_size=1)
        zero_init_(self.pointwise)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pointwise(torch.relu(self.norm(self.depthwise(x))))


class BottleneckSeed(nn.Module):
    """`x + expand(relu(norm(k3(relu(norm(reduce(x)))))))` through C/4 channels (min 4).

    A ResNet-style bottleneck: the k3 conv works on a quarter of the channels,
    so it sees neighbours at a fraction of a full conv's cost. `expand` is zero at birth.
    """

    def __init__(self, channels: int, spatial_dims: int) -> None:
        super().__init__()
        _check_channels(channels)
        conv = _conv_class(spatial_dims)
        hidden = max(_MIN_HIDDEN, channels // 4)
        self.reduce = conv(channels, hidden, kernel_size=1)
        self.norm1 = group_norm(hidden)
        self.conv = conv(hidden, hidden, kernel_size=3, padding=1)
        self.norm2 = group_norm(hidden)
        self.expand = conv(hidden, channels, kernel_size=1)
        zero_init_(self.expand)

    def forward(self, x: Tensor) -> Tensor:
        hidden = torch.relu(self.norm1(self.reduce(x)))
        hidden = torch.relu(self.norm2(self.conv(hidden)))
        return x + self.expand(hidden)


class ConvSmallSeed(nn.Module):
    """`x + expand_1x1(relu(norm(k3(x))))` with a k3 conv to C/2 channels (min 4).

    Half a full conv's cost; `expand` is zero at birth.
    """

    def __init__(self, channels: int, spatial_dims: int) -> None:
        super().__init__()
        _check_channels(channels)
        conv = _conv_class(spatial_dims)
        hidden = max(_MIN_HIDDEN, channels // 2)
        self.conv = conv(channels, hidden, kernel_size=3, padding=1)
        self.norm = group_norm(hidden)
        self.expand = conv(hidden, channels, kernel_size=1)
        zero_init_(self.expand)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.expand(torch.relu(self.norm(self.conv(x))))


class ConvLightSeed(nn.Module):
    """`x + k3(relu(norm(x)))`: one full C->C kernel-3 conv, pre-activation.

    The seed that rescues a host which cannot see neighbouring positions (for
    example a kernel-1 host): its only conv mixes each position with its
    neighbours. Zero at birth, and because its input `relu(norm(x))` is not
    zero, the conv receives gradient from the first step.
    """

    def __init__(self, channels: int, spatial_dims: int) -> None:
        super().__init__()
        _check_channels(channels)
        conv = _conv_class(spatial_dims)
        self.norm = group_norm(channels)
        self.conv = conv(channels, channels, kernel_size=3, padding=1)
        zero_init_(self.conv)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(torch.relu(self.norm(x)))


class ConvHeavySeed(nn.Module):
    """`x + k3_out(relu(norm(k3_in(relu(norm(x))))))` through 2C channels.

    Two pre-activation kernel-3 convs, C -> 2C -> C: the largest CNN seed,
    with a receptive field of 5 positions per axis. `conv_out` is zero at birth.
    """

    def __init__(self, channels: int, spatial_dims: int) -> None:
        super().__init__()
        _check_channels(channels)
        conv = _conv_class(spatial_dims)
        hidden = 2 * channels
        self.norm_in = group_norm(channels)
        self.conv_in = conv(channels, hidden, kernel_size=3, padding=1)
        self.norm_hidden = group_norm(hidden)
        self.conv_out = conv(hidden, channels, kernel_size=3, padding=1)
        zero_init_(self.conv_out)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.conv_in(torch.relu(self.norm_in(x)))
        return x + self.conv_out(torch.relu(self.norm_hidden(hidden)))


def register(registry: BlueprintRegistry) -> None:
    """Register the CNN built-ins; this order is the blueprint action order."""

    @registry.register("cnn", "noop", "identity, no parameters (baseline)")
    def _noop(shape: SlotShape) -> nn.Module:
        return NoopSeed()

    @registry.register("cnn", "norm", "x + tanh(s)*GroupNorm(x), s starts at 0")
    def _norm(shape: SlotShape) -> nn.Module:
        return ScaledNormSeed(group_norm(shape.width))

    @registry.register("cnn", "attention", "squeeze-excite channel gate from globally pooled features")
    def _attention(shape: SlotShape) -> nn.Module:
        return SqueezeExciteSeed(shape.width)

    @registry.register("cnn", "depthwise", "depthwise k3 conv, GroupNorm, ReLU, pointwise 1x1")
    def _depthwise(shape: SlotShape) -> nn.Module:
        return DepthwiseSeed(shape.width, shape.spatial_dims)

    @registry.register("cnn", "bottleneck", "1x1 to C/4, k3, 1x1 back (ResNet bottleneck)")
    def _bottleneck(shape: SlotShape) -> nn.Module:
        return BottleneckSeed(shape.width, shape.spatial_dims)

    @registry.register("cnn", "conv_small", "k3 conv to C/2, GroupNorm, ReLU, 1x1 back")
    def _conv_small(shape: SlotShape) -> nn.Module:
        return ConvSmallSeed(shape.width, shape.spatial_dims)

    @registry.register("cnn", "conv_light", "one full k3 conv C->C, pre-activation (mixes neighbours)")
    def _conv_light(shape: SlotShape) -> nn.Module:
        return ConvLightSeed(shape.width, shape.spatial_dims)

    @registry.register("cnn", "conv_heavy", "two k3 convs C->2C->C, pre-activation")
    def _conv_heavy(shape: SlotShape) -> nn.Module:
        return ConvHeavySeed(shape.width, shape.spatial_dims)
