"""Convolutional host for 1-D `(B, C, L)` or 2-D `(B, C, H, W)` inputs.

Each block is conv -> norm -> ReLU (-> max-pool, kernel 2, stride 2) and is
one segment; slot i sits after block i. Pooling, when on, follows *every*
block, so the input must be at least 2**len(widths) long along each spatial
axis (PyTorch raises otherwise). The head is global average pooling, dropout
and a linear classifier.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from esper.contracts.config import MAX_DIM, MAX_LAYERS, StrictConfig
from esper.contracts.shapes import SlotShape
from esper.contracts.slot_ids import format_slot_id
from esper.hosts.registry import HostConfigError, register_host
from esper.hosts.segmented import SegmentedHost

# GroupNorm: as many groups as possible (at most this many) while every group
# keeps at least _MIN_CHANNELS_PER_GROUP channels, the same rule as the CNN blueprints.
_MAX_GROUPS = 32
_MIN_CHANNELS_PER_GROUP = 16


class CNNHostConfig(StrictConfig):
    in_channels: int = Field(ge=1, le=MAX_DIM)
    num_classes: int = Field(ge=1, le=MAX_DIM)
    # One block per width.
    widths: list[Annotated[int, Field(ge=1, le=MAX_DIM)]] = Field(min_length=1, max_length=MAX_LAYERS)
    spatial_dims: Literal[1, 2]
    # Odd so padding kernel_size // 2 keeps the spatial size; 1 is the "blind" host.
    kernel_size: int = Field(default=3, ge=1, le=MAX_DIM)
    pool: bool = True
    norm: Literal["batch", "group", "none"] = "batch"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @field_validator("spatial_dims", mode="before")
    @classmethod
    def _no_bool_dims(cls, value: Any) -> Any:
        # Literal[1, 2] would otherwise accept True as 1.
        if isinstance(value, bool):
            raise HostConfigError("spatial_dims", f"expected 1 or 2, got bool ({value!r})")
        return value

    @model_validator(mode="after")
    def _odd_kernel(self) -> CNNHostConfig:
        if self.kernel_size % 2 == 0:
            raise HostConfigError("kernel_size", f"expected an odd int >= 1, got {self.kernel_size}")
        return self


def group_count(width: int) -> int:
    """Number of GroupNorm groups for `width` channels (1 when width < 32)."""
    best = 1
    for groups in range(1, min(_MAX_GROUPS, width // _MIN_CHANNELS_PER_GROUP) + 1):
        if width % groups == 0:
            best = groups
    return best


class ConvBlock(nn.Module):
    """conv -> norm -> ReLU (-> max-pool); one host segment."""

    def __init__(
        self, in_width: int, out_width: int, spatial_dims: int, kernel_size: int, pool: bool, norm: str
    ) -> None:
        super().__init__()
        conv_class = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
        # A norm layer with its own shift makes the conv bias redundant.
        self.conv = conv_class(in_width, out_width, kernel_size, padding=kernel_size // 2, bias=(norm == "none"))
        self.norm = _make_norm(norm, out_width, spatial_dims)
        self.pool = _make_pool(spatial_dims) if pool else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


def _make_norm(norm: str, width: int, spatial_dims: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm1d(width) if spatial_dims == 1 else nn.BatchNorm2d(width)
    if norm == "group":
        return nn.GroupNorm(group_count(width), width)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"CNNHost norm: expected 'batch', 'group' or 'none', got {norm!r}")


def _make_pool(spatial_dims: int) -> nn.Module:
    return nn.MaxPool1d(2, 2) if spatial_dims == 1 else nn.MaxPool2d(2, 2)


@register_host("cnn")
class CNNHost(SegmentedHost):
    """Stack of conv blocks with a slot after each one (ids r0c0, r0c1, ...)."""

    kind: ClassVar[str]  # set by register_host
    config_class = CNNHostConfig
    cfg: CNNHostConfig

    def __init__(self, cfg: CNNHostConfig) -> None:
        super().__init__()
        if not isinstance(cfg, CNNHostConfig):
            raise ValueError(f"CNNHost: expected a CNNHostConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        ins = [cfg.in_channels, *cfg.widths[:-1]]
        self.segments = nn.ModuleList(
            ConvBlock(i, o, cfg.spatial_dims, cfg.kernel_size, cfg.pool, cfg.norm)
            for i, o in zip(ins, cfg.widths, strict=True)
        )
        self.head_dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.widths[-1], cfg.num_classes)
        self._slot_shapes = {
            format_slot_id(0, i): SlotShape("cnn", width, spatial_dims=cfg.spatial_dims)
            for i, width in enumerate(cfg.widths)
        }
        # Rank of a batched input: batch + channels + spatial axes.
        self._input_rank = cfg.spatial_dims + 2

    def stem(self, x: Tensor) -> Tensor:
        """Check the input layout; a 1-D single-channel input may come as (B, L)."""
        if x.dim() == 2 and self._input_rank == 3 and self.cfg.in_channels == 1:
            x = x.unsqueeze(1)
        if x.dim() != self._input_rank or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"CNNHost input: expected {self._expected_layout()}, got shape {tuple(x.shape)}")
        return x

    def head(self, h: Tensor) -> Tensor:
        pooled = torch.flatten(h, 2).mean(dim=2)
        return self.classifier(self.head_dropout(pooled))

    def _expected_layout(self) -> str:
        channels = self.cfg.in_channels
        if self._input_rank == 3:
            alt = " or (B, L)" if channels == 1 else ""
            return f"(B, {channels}, L){alt}"
        return f"(B, {channels}, H, W)"
