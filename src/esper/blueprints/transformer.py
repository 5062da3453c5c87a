"""Transformer seed blueprints for `(B, T, D)` token streams.

Every seed is a residual branch that is exactly zero at birth (its output
projection starts at zero, or it is scaled by `tanh(scale)` with scale 0), so
`seed(x)` equals `x` when it is planted. Attention seeds are causal: a seed
must not let a token see the future the host is trained not to see.

`flex_attention` is the same attention as `attention`, computed by PyTorch's
FlexAttention with a causal block mask. FlexAttention in torch 2.13 has no
backward pass on CPU (or MPS), so a seed built from it cannot train on a
CPU-only machine: creating it there raises `BlueprintError` saying so. The
check runs each time the blueprint is created, never at import time, and there
is no silent fallback to SDPA.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper.blueprints.registry import BlueprintError
from esper.blueprints.zero_init import NoopSeed, ScaledNormSeed, zero_init_
from esper.contracts.shapes import SlotShape

if TYPE_CHECKING:
    from esper.blueprints.registry import BlueprintRegistry

__all__ = [
    "LORA_LARGE_RANK",
    "LORA_RANK",
    "MLP_EXPANSION",
    "MLP_SMALL_EXPANSION",
    "AttentionSeed",
    "FlexAttentionSeed",
    "LoraSeed",
    "MlpSeed",
    "flex_attention_unavailable_reason",
    "register",
]

LORA_RANK = 8
LORA_LARGE_RANK = 32
MLP_SMALL_EXPANSION = 2
MLP_EXPANSION = 4

_FLEX_MODULE = "torch.nn.attention.flex_attention"


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


class LoraSeed(nn.Module):
    """`x + up(down(x))`, a rank-r update of the identity; `up` starts at zero."""

    def __init__(self, width: int, rank: int) -> None:
        super().__init__()
        _check_positive("width", width)
        _check_positive("rank", rank)
        if rank > width:
            raise BlueprintError(
                f"LoRA seed: rank {rank} is larger than the slot width {width}; need rank <= width"
            )
        self.down = nn.Linear(width, rank, bias=False)
        self.up = nn.Linear(rank, width, bias=False)
        zero_init_(self.up)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(self.down(x))


class MlpSeed(nn.Module):
    """`x + fc2(gelu(fc1(LayerNorm(x))))` with hidden width `expansion * width`; fc2 starts at zero."""

    def __init__(self, width: int, expansion: int) -> None:
        super().__init__()
        _check_positive("width", width)
        _check_positive("expansion", expansion)
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, expansion * width)
        self.fc2 = nn.Linear(expansion * width, width)
        zero_init_(self.fc2)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class AttentionSeed(nn.Module):
    """Pre-LN causal multi-head self-attention, `x + out(attend(qkv(LayerNorm(x))))`.

    The kernel is `scaled_dot_product_attention(is_causal=True)`; `out` starts at zero.
    """

    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        _check_positive("width", width)
        _check_positive("n_heads", n_heads)
        if width % n_heads:
            raise ValueError(f"n_heads: expected a divisor of width {width}, got {n_heads}")
        self.width = width
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        zero_init_(self.out)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.size(-1) != self.width:
            raise ValueError(
                f"{type(self).__name__}: expected (batch, seq, {self.width}), got {tuple(x.shape)}"
            )
        batch, seq, _ = x.shape
        # (B, T, 3D) -> three (B, heads, T, head_dim) tensors.
        q, k, v = (
            t.reshape(batch, seq, self.n_heads, self.width // self.n_heads).transpose(1, 2)
            for t in self.qkv(self.norm(x)).split(self.width, dim=-1)
        )
        attended = self._attend(q, k, v).transpose(1, 2).reshape(batch, seq, self.width)
        return x + self.out(attended)


def _causal(batch: Tensor, head: Tensor, q_index: Tensor, kv_index: Tensor) -> Tensor:
    return q_index >= kv_index


class FlexAttentionSeed(AttentionSeed):
    """`AttentionSeed` with FlexAttention and a causal block mask as the kernel.

    Same parameters (and names) as `AttentionSeed`, so weights transfer between
    them. On CPU this class runs forward only (torch 2.13 raises
    NotImplementedError on a CPU backward); the `flex_attention` blueprint
    refuses to build it where no device can train it.
    """

    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__(width, n_heads)
        flex = importlib.import_module(_FLEX_MODULE)
        self._flex_attention = flex.flex_attention
        self._create_block_mask = flex.create_block_mask
        # The mask depends only on sequence length and device: rebuild it when either changes.
        self._mask_key: tuple[int, torch.device] | None = None
        self._mask: object = None

    def _block_mask(self, seq: int, device: torch.device) -> object:
        if self._mask_key != (seq, device):
            self._mask = self._create_block_mask(
                _causal, B=None, H=None, Q_LEN=seq, KV_LEN=seq, device=device
            )
            self._mask_key = (seq, device)
        return self._mask

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return self._flex_attention(q, k, v, block_mask=self._block_mask(q.size(-2), q.device))


def _accelerator_can_train_flex() -> bool:
    # FlexAttention's backward exists for CUDA and XPU devices in torch 2.13.
    return torch.cuda.is_available() or torch.xpu.is_available()


def flex_attention_unavailable_reason() -> str | None:
    """Why a FlexAttention seed cannot be trained on this machine, or None if it can.

    Checked live (never cached at import) so the answer follows the torch that
    is actually loaded: it imports FlexAttention and, without an accelerator,
    runs a tiny CPU forward and backward to see whether torch supports it.
    """
    use_instead = "use blueprint 'attention' (the same causal attention through scaled_dot_product_attention)"
    try:
        flex = importlib.import_module(_FLEX_MODULE)
    except ImportError as error:
        return (
            f"FlexAttention is missing: torch {torch.__version__} has no {_FLEX_MODULE} ({error}); "
            f"install torch>=2.5 or {use_instead}"
        )
    if _accelerator_can_train_flex():
        return None
    # Explicit CPU device: this may run inside `with torch.device("meta")` (parameter counting).
    with torch.device("cpu"):
        probe = torch.zeros(1, 1, 1, 8, requires_grad=True)
        try:
            flex.flex_attention(probe, probe, probe).sum().backward()
        except NotImplementedError as error:
            return (
                f"FlexAttention cannot train on this machine: torch {torch.__version__} has no "
                f"FlexAttention backward on CPU ({error}) and no CUDA/XPU device is available; "
                f"{use_instead}, or install a CUDA build of torch and run on a GPU"
            )
    return None


def register(registry: BlueprintRegistry) -> None:
    """Register the transformer built-ins; this order is the blueprint action order."""

    @registry.register("transformer", "noop", "identity, no parameters (baseline)")
    def _noop(shape: SlotShape) -> nn.Module:
        return NoopSeed()

    @registry.register("transformer", "norm", "x + tanh(s)*LayerNorm(x), s starts at 0")
    def _norm(shape: SlotShape) -> nn.Module:
        return ScaledNormSeed(nn.LayerNorm(shape.width))

    @registry.register("transformer", "lora", f"low-rank update x + B(A(x)), rank {LORA_RANK}")
    def _lora(shape: SlotShape) -> nn.Module:
        return LoraSeed(shape.width, LORA_RANK)

    @registry.register("transformer", "lora_large", f"low-rank update x + B(A(x)), rank {LORA_LARGE_RANK}")
    def _lora_large(shape: SlotShape) -> nn.Module:
        return LoraSeed(shape.width, LORA_LARGE_RANK)

    @registry.register("transformer", "attention", "causal self-attention (scaled_dot_product_attention)")
    def _attention(shape: SlotShape) -> nn.Module:
        return AttentionSeed(shape.width, shape.n_heads)

    @registry.register("transformer", "flex_attention", "causal self-attention (FlexAttention, block mask)")
    def _flex_attention(shape: SlotShape) -> nn.Module:
        reason = flex_attention_unavailable_reason()
        if reason is not None:
            raise BlueprintError(reason)
        return FlexAttentionSeed(shape.width, shape.n_heads)

    @registry.register(
        "transformer", "mlp_small", f"MLP x + W2(gelu(W1(LN(x)))), hidden {MLP_SMALL_EXPANSION}*D"
    )
    def _mlp_small(shape: SlotShape) -> nn.Module:
        return MlpSeed(shape.width, MLP_SMALL_EXPANSION)

    @registry.register("transformer", "mlp", f"MLP x + W2(gelu(W1(LN(x)))), hidden {MLP_EXPANSION}*D")
    def _mlp(shape: SlotShape) -> nn.Module:
        return MlpSeed(shape.width, MLP_EXPANSION)
